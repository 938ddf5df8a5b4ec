"""``python -m laconic_pyserini.encode``: the corpus encoder CLI (three argument groups, as pyserini's).

::

    python -m laconic_pyserini.encode \\
      input   --corpus BEIR_DIR_OR_NAME_OR_JSONL [--fields title text] [--shard-id I --shard-num N] \\
              [--skip-invalid] [--docs-as-queries | --no-docs-as-queries] \\
      output  --embeddings DIR [--part-size N] \\
      encoder --encoder SPEC_OR_PATH_OR_HUB_ID [--tokenizer PATH_OR_ID] [--batch-size B] [--max-length L] \\
              [--device cpu] [--dtype auto|fp32|bf16|fp16] [--weights impact|float]

    python -m laconic_pyserini.encode merge  --embeddings DIR [--corpus C]   # combine finished shards
    python -m laconic_pyserini.encode verify --embeddings DIR [--corpus C]   # checksums; corpus covered once

The group words (``input``, ``output``, ``encoder``) may be left out. Rerunning the same command resumes.
Bad input and unusable folders end with a one-line ``error:`` and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..data import require_documents
from ..errors import cli, require_at_least
from ..modeling import QUANTIZE_HELP, QUANTIZE_SCHEMES
from .corpus import encode_corpus
from .settings import DEFAULT_PART_SIZE, DEFAULT_WINDOW_BATCHES, EncodeSettings, InferenceSettings
from .shards import merge_shards, verify_collection

GROUPS = ("input", "output", "encoder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.encode",
                                     description="Encode a corpus into an Anserini JsonVectorCollection.")
    source = parser.add_argument_group("input")
    source.add_argument("--corpus", required=True, help="BEIR folder or name, or a pyserini JSONL file (.gz too)")
    source.add_argument("--fields", nargs="+", default=["title", "text"], choices=("title", "text"),
                        help="fields joined (with a space, empty ones left out) into the encoded text")
    source.add_argument("--shard-id", type=int, default=None, help="this process's shard (default: $RANK or 0)")
    source.add_argument("--shard-num", type=int, default=None, help="number of shards (default: $WORLD_SIZE or 1)")
    source.add_argument("--skip-invalid", action="store_true",
                        help="skip (and count) malformed lines instead of stopping at the first one")
    source.add_argument("--docs-as-queries", action=argparse.BooleanOptionalAction, default=None,
                        help="encode documents with the query prefix (default: on for BEIR Quora and CQADupStack)")
    out = parser.add_argument_group("output")
    out.add_argument("--embeddings", required=True, help="output folder (resumed when it holds a run of this command)")
    out.add_argument("--part-size", type=int, default=DEFAULT_PART_SIZE,
                     help="documents per committed part file (a kill loses at most one part of work)")
    enc = parser.add_argument_group("encoder")
    enc.add_argument("--encoder", required=True, help="spec name (encoders/*.yaml), local model folder or hub id")
    enc.add_argument("--tokenizer", default=None, help="tokenizer path or id (overrides the spec)")
    enc.add_argument("--batch-size", type=int, default=32)
    enc.add_argument("--max-length", type=int, default=None, help="overrides the spec's max length (256)")
    enc.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cuda under torchrun: cuda:$LOCAL_RANK)")
    enc.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                     help="auto (default): resume in the folder's dtype, else bf16 for a decoder where this CPU runs "
                          "bf16 fast and fp32 otherwise; fp16: GPU only; the choice and the CPU are recorded in "
                          "manifest.json")
    enc.add_argument("--quantize", default="none", choices=QUANTIZE_SCHEMES, help=QUANTIZE_HELP)
    enc.add_argument("--weights", default="impact",
                     help="impact (default): integer impacts rint(w*100), the Lucene contract; float: the encoder's "
                          "positive float weights, for Seismic and Milvus (a Lucene index quantises them on the way "
                          "in, to the very index impact gives); recorded in manifest.json")
    enc.add_argument("--window-batches", type=int, default=DEFAULT_WINDOW_BATCHES,
                     help="batches per length-sorting window")
    enc.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def strip_groups(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """Drop the group words where an option is expected (never a value such as ``--embeddings output``)."""
    takes_one = {opt for action in parser._actions if action.nargs is None and action.option_strings
                 and not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                             argparse.BooleanOptionalAction, argparse._HelpAction))
                 for opt in action.option_strings}
    kept: list[str] = []
    for i, token in enumerate(argv):
        if token in GROUPS and (i == 0 or argv[i - 1] not in takes_one):
            continue
        kept.append(token)
    return kept


def _merge_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m laconic_pyserini.encode {command}")
    parser.add_argument("--embeddings", required=True, help="the encode output folder")
    parser.add_argument("--corpus", default=None, help="corpus to check against (default: the one recorded)")
    return parser


@cli
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in ("merge", "verify"):
        args = _merge_parser(argv[0]).parse_args(argv[1:])
        manifest = (merge_shards if argv[0] == "merge" else verify_collection)(args.embeddings, args.corpus)
        print(f"{args.embeddings}: OK, {manifest.documents} documents in {len(manifest.parts)} parts, "
              f"the corpus covered exactly once")
        return 0
    parser = build_parser()
    args = parser.parse_args(strip_groups(argv, parser))
    require_at_least(1, {"--batch-size": args.batch_size, "--max-length": args.max_length,
                         "--part-size": args.part_size, "--window-batches": args.window_batches,
                         "--shard-num": args.shard_num})
    require_at_least(0, {"--shard-id": args.shard_id})
    settings = EncodeSettings(weights=args.weights, quantize=args.quantize, fields=tuple(args.fields),
                              docs_as_queries=args.docs_as_queries, skip_invalid=args.skip_invalid,
                              part_size=args.part_size, window_batches=args.window_batches)
    inference = InferenceSettings(batch_size=args.batch_size, device=_device(args.device), dtype=args.dtype)
    require_documents(args.corpus)  # before the model loads
    from ..spec import load_spec

    spec = load_spec(args.encoder, tokenizer=args.tokenizer, max_length=args.max_length)
    manifest = encode_corpus(args.corpus, args.embeddings, spec, settings=settings, inference=inference,
                             shard_id=args.shard_id, shard_num=args.shard_num,
                             progress=False if args.no_progress else None)
    counts = manifest.counts
    print(f"{args.embeddings}: {counts['documents']} documents ({counts['empty_documents']} empty, "
          f"{counts['invalid_lines']} invalid lines skipped) in {len(manifest.parts)} parts, {manifest.weights} "
          "weights; "
          f"complete={manifest.complete}")
    return 0


def _device(device: str) -> str:
    """``cuda`` under torchrun means this process's own GPU."""
    import os

    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


if __name__ == "__main__":
    sys.exit(main())
