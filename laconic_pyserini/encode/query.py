"""Pre-encoded queries in pyserini's formats: ``python -m laconic_pyserini.encode.query``.

::

    python -m laconic_pyserini.encode.query --topics BEIR_DIR_OR_NAME_OR_FILE [--split test] \\
        --encoder SPEC_OR_PATH_OR_HUB_ID --output FILE [--format tsv|jsonl]

- TSV (``qid<TAB>term term term…``, each term repeated as many times as its integer impact): what
  ``python -m pyserini.search.lucene --impact --topics FILE.tsv`` reads; pyserini splits it with ``str.split()``
  and counts the repeats back into weights.
- JSONL (``{"id", "contents", "vector": {term: impact}}``): pyserini's ``CachedDataQueryEncoder`` looks vectors
  up by ``contents`` (the query text), so it is kept.

Impacts come from the same :func:`~laconic_pyserini.quantize.quantize` as the documents'. Beside the output,
``FILE.manifest.json`` records the encoder spec and the fingerprint of its weights and tokenizer
(:mod:`laconic_pyserini.fingerprint`), so a searcher can refuse queries from another encoder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import cli, require_at_least, require_output_file
from ..fingerprint import FINGERPRINT_KEY, encoder_fingerprint
from ..modeling import QUANTIZE_HELP, QUANTIZE_SCHEMES
from ..outputs import atomic_open, claim_file
from ..quantize import query_impacts
from ..topics import load_topics
from .manifest import EncodeError, sha256_file, write_json_atomic
from .writer import check_terms

logger = logging.getLogger(__name__)

FORMATS = ("tsv", "jsonl")


def tsv_line(qid: str, impacts: dict[str, int]) -> str:
    """``qid<TAB>`` and the terms, each repeated by its impact (highest impact first, then by term)."""
    if not qid or any(ch in qid for ch in "\t\r\n") or qid != qid.strip():
        raise EncodeError(f"query id {qid!r} contains a tab, a line break or surrounding spaces, which the TSV "
                          "topic reader cannot keep; use --format jsonl")
    check_terms(impacts, f"query {qid!r}")
    terms = sorted(impacts.items(), key=lambda item: (-item[1], item[0]))
    return qid + "\t" + " ".join(" ".join([term] * impact) for term, impact in terms) + "\n"


def jsonl_line(qid: str, text: str, impacts: dict[str, int]) -> str:
    check_terms(impacts, f"query {qid!r}")
    return json.dumps({"id": qid, "contents": text, "vector": impacts}, ensure_ascii=False) + "\n"


def _manifest_of(output: Path) -> Path:
    return output.with_name(output.name + ".manifest.json")


def _topics_path(topics: str | os.PathLike) -> Path | None:
    """The topics as a path on disk (None for a dataset name that is not one)."""
    path = Path(topics)
    return path if path.exists() else None


def encode_topics(topics: str | os.PathLike | dict[str, str], output: str | os.PathLike, spec=None, *,
                  encoder=None, split: str | None = "test", fmt: str | None = None, batch_size: int = 32,
                  device: str = "cpu", dtype: str = "auto", quantize: str = "none") -> dict[str, dict[str, int]]:
    """Encode topics (a BEIR folder or name, a topics file, or ``{qid: text}``) into ``output``.

    ``fmt`` defaults to the output's suffix (``.tsv`` or ``.jsonl``). Returns ``{qid: {term: impact}}``.
    A query whose vector is empty is an error in TSV (pyserini 1.6's reader, Anserini's ``TsvStringTopicReader``,
    refuses the *whole file* when one line is ``qid<TAB>`` alone) and is written as ``{}`` in JSONL.
    ``dtype="auto"``: what this CPU runs fast (:func:`laconic_pyserini.modeling.cpu.resolve_dtype`); the sidecar
    ``FILE.manifest.json`` records the dtype, head kernel, ``quantize`` and CPU decision used (``kernels``).
    """
    output = Path(output)
    fmt = fmt or output.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise EncodeError(f"{output}: cannot tell the format from the suffix; pass --format tsv or jsonl")
    # An earlier output of ours has its manifest beside it; any other existing file is the user's.
    claim_file(output, flag="--output", ours=lambda path: _manifest_of(path).is_file(),
               inputs=[] if isinstance(topics, dict) else [_topics_path(topics)])
    # Topics are read (and their errors found) before a model loads.
    queries = dict(topics) if isinstance(topics, dict) else load_topics(topics, split=split)
    if encoder is None:
        if spec is None:
            raise EncodeError("encode_topics needs an encoder spec or a loaded encoder")
        from ..modeling import load_sparse_encoder
        from ..spec import load_spec

        spec = spec if hasattr(spec, "to_dict") else load_spec(str(spec))
        encoder = load_sparse_encoder(spec, device=device, dtype=dtype, quantize=quantize)
    spec = encoder.spec
    qids, texts = list(queries), list(queries.values())
    impacts = query_impacts(encoder, texts, batch_size=batch_size)
    lines = []
    for qid, text, vector in zip(qids, texts, impacts):
        if fmt == "tsv":
            if not vector:
                raise EncodeError(f"query {qid!r} ({text!r}) has an empty vector, which a TSV line cannot carry; "
                                  "use --format jsonl")
            lines.append(tsv_line(qid, vector))
        else:
            lines.append(jsonl_line(qid, text, vector))
    with atomic_open(output, newline="\n") as f:
        f.writelines(lines)
    from .. import __version__

    write_json_atomic(_manifest_of(output), {
        "format": f"laconic-pyserini/encoded-queries-{fmt}", "package_version": __version__,
        "spec": spec.to_dict(), FINGERPRINT_KEY: encoder_fingerprint(spec),
        "topics": str(topics) if not isinstance(topics, dict) else "<dict>",
        "split": split, "queries": len(lines), "empty_vectors": sum(1 for v in impacts if not v),
        "file": output.name, "sha256": sha256_file(output), "kernels": encoder.kernels})
    logger.info("wrote %d encoded queries to %s", len(lines), output)
    return dict(zip(qids, impacts))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.encode.query",
                                     description="Encode topics into pyserini's pre-encoded query formats.")
    parser.add_argument("--topics", required=True, help="BEIR folder or name, or a topics .tsv/.jsonl file")
    parser.add_argument("--split", default="test", help="qrels split whose judged queries to keep (BEIR)")
    parser.add_argument("--all-queries", action="store_true", help="keep every query, judged or not")
    parser.add_argument("--encoder", required=True, help="spec name, local model folder or hub id")
    parser.add_argument("--tokenizer", default=None, help="tokenizer path or id (overrides the spec)")
    parser.add_argument("--output", required=True, help="output file (.tsv or .jsonl)")
    parser.add_argument("--format", choices=FORMATS, default=None, help="default: from the output suffix")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=None, help="overrides the spec's max length")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto (default): bf16 for a decoder where this CPU runs bf16 fast, else fp32; "
                             "fp16: GPU only")
    parser.add_argument("--quantize", default="none", choices=QUANTIZE_SCHEMES, help=QUANTIZE_HELP)
    return parser


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    require_at_least(1, {"--batch-size": args.batch_size, "--max-length": args.max_length})
    require_output_file("--output", args.output)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..spec import load_spec

    spec = load_spec(args.encoder, tokenizer=args.tokenizer, max_length=args.max_length)
    encode_topics(args.topics, args.output, spec, split=None if args.all_queries else args.split,
                  fmt=args.format, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                  quantize=args.quantize)
    return 0


if __name__ == "__main__":
    sys.exit(main())
