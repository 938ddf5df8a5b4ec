"""Search topics against an index and write a TREC run.

    python -m laconic_pyserini.search [--bm25] --index DIR --topics BEIR_DIR_OR_NAME_OR_FILE [--split test]
        --output RUN [--hits 1000] [--remove-query] [--threads N] [--backend NAME]
        [--encoder SPEC_OR_PATH | --pre-encoded FILE] [--batch-size B] [--device D]
        [--query-cut N] [--heap-factor F] [--ef-search N]
    python -m laconic_pyserini.search --index DIR --index DIR [--index …] --topics … --output RUN
        [--fusion rrf|interpolation|average|normalize] [--rrf.k 60] [--alpha 0.5] [--depth N] [backend options]

The searcher is chosen by the index's ``manifest.json`` ``kind`` (and ``--backend`` among those registered for
it, :mod:`laconic_pyserini.searchers`); the backend options are the registry's, and one that does not apply to the
chosen backend is an error. For an impact index, query texts are encoded with the index's own encoder (or
``--encoder``, which must have the same contract), or ``--pre-encoded FILE`` (``qid<TAB>term term…`` or JSONL
vectors from ``python -m laconic_pyserini.encode.query``) supplies the vectors; with ``--topics`` as well, only the
topics' ids are searched. ``--backend seismic`` searches an approximate Seismic index built once beside the Lucene
one.

Several ``--index`` search each index with its default backend (the backend options apply to every index whose
backend takes them) one after the other and fuse the runs as ``python -m laconic_pyserini.fuse`` does
(:class:`laconic_pyserini.searchers.fused.FusedSearcher`): each index answers ``--depth`` hits (default: the hits
fetched) and the fused run keeps ``--hits``.

``--remove-query`` drops hits whose doc id equals the query id (BEIR's convention for ArguAna, Quora and
CQADupStack; Anserini's ``-removeQuery``); one extra hit is retrieved so that a run still has ``--hits`` hits per
query.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import jvm
from .data import DataError
from .console import progress_bar, progress_enabled
from .errors import UsageError, cli, require_at_least, require_output_file
from .fuse import add_fusion_options
from .fusion import DEFAULT_ALPHA, DEFAULT_RRF_K, METHODS, FusionSettings
from .index.manifest import IndexFolderError, read_index_manifest
from .run import Run, claim_run_file, fetch_depth, kept_hits, write_trec_run
from .searchers import Backend, Searcher, all_backends, find_backend, index_phrase, kind_of, open_fused
from .topics import load_topics

logger = logging.getLogger(__name__)


#: Queries per batch_search call while a progress bar is drawn (large enough to keep bulk searching bulk).
PROGRESS_BLOCK = 256
RUN_MANIFEST_FORMAT = "laconic-pyserini/run"


def search_topics(searcher: Searcher, topics: dict, *, hits: int = 1000, remove_query: bool = False,
                  threads: int = 1, progress: bool | None = False) -> Run:
    """Run every topic; with ``remove_query``, self-hits are dropped and the list cut back to ``hits``.

    ``progress`` (``None``: when the console is a terminal) draws a bar, searching in blocks of
    :data:`PROGRESS_BLOCK` queries.
    """
    k = fetch_depth(hits, remove_query)
    if not (progress_enabled() if progress is None else progress):
        run = searcher.batch_search(topics, k, threads)
    else:
        run, items = {}, list(topics.items())
        with progress_bar(total=len(items), desc="search", unit="query", enabled=True) as bar:
            for start in range(0, len(items), PROGRESS_BLOCK):
                block = dict(items[start:start + PROGRESS_BLOCK])
                run.update(searcher.batch_search(block, k, threads))
                bar.update(len(block))
    return {q: kept_hits(q, found, hits, remove_query) for q, found in run.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bm25", action="store_true", help="insist that the index is a BM25 index")
    parser.add_argument("--index", required=True, action="append",
                        help="index folder built by laconic_pyserini.index (or milvus://…); repeat it to search "
                             "several indexes and fuse their runs (--fusion)")
    parser.add_argument("--fusion", choices=METHODS, default=None,
                        help="with several --index: how their runs are fused (default rrf; pyserini's arithmetic, "
                             "see laconic_pyserini.fuse)")
    add_fusion_options(parser, defaults=False)
    parser.add_argument("--topics", help="BEIR folder, dataset name, or topics .tsv/.jsonl (or give --pre-encoded)")
    parser.add_argument("--split", default="test", help="qrels split whose judged queries are searched")
    parser.add_argument("--output", required=True, help="TREC run to write")
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--remove-query", action="store_true", help="drop hits whose doc id equals the query id")
    parser.add_argument("--threads", type=int, default=1)
    names = sorted({f"{b.kind}: {b.name}" for b in all_backends()})
    parser.add_argument("--backend", default=None, help="search backend for the index kind (" + "; ".join(names) +
                        "; the first of a kind is its default)")
    parser.add_argument("--pre-encoded", help="pre-encoded queries: qid<TAB>term term… (.tsv) or JSONL vectors")
    backends = parser.add_argument_group("backend options (each applies to the backends that take it)")
    seen: set[str] = set()
    for backend in all_backends():
        for option in backend.options:
            if option.flag not in seen:
                seen.add(option.flag)
                backends.add_argument(option.flag, type=option.type, default=None, help=option.help)
    return parser


def searcher_options(args: argparse.Namespace, backend: Backend, where: str) -> dict:
    """The keyword options for ``backend`` from the flags given; a flag it does not take is an error."""
    given = {option.flag: option.keyword for b in all_backends() for option in b.options
             if getattr(args, option.keyword) is not None}
    foreign = sorted(flag for flag, keyword in given.items() if not backend.takes(keyword))
    if args.pre_encoded and not backend.takes_vectors:
        foreign.append("--pre-encoded")
    if foreign:
        verb = "does" if len(foreign) == 1 else "do"
        raise IndexFolderError(f"{where}: {', '.join(foreign)} {verb} not apply to {index_phrase(backend.kind)} "
                               f"searched with {backend.name}; leave it out or pick another --backend")
    return {keyword: getattr(args, keyword) for keyword in given.values()}


def _queries(args: argparse.Namespace) -> dict:
    """Topic texts, or pre-encoded vectors (restricted to the topics' ids when --topics is given too)."""
    if not args.pre_encoded:
        return load_topics(args.topics, args.split)
    from .searchers.queries import read_pre_encoded
    from .fingerprint import FINGERPRINT_KEY
    from .spec import EncoderSpec

    if kind_of(args.index) == "milvus":  # a collection's manifest lives in the collection, not in a folder
        from .searchers.milvus import read_collection_manifest

        manifest = read_collection_manifest(args.index)
    else:
        manifest = read_index_manifest(args.index)
    vectors = read_pre_encoded(args.pre_encoded, EncoderSpec.from_dict(manifest["spec"], source=args.index),
                               index_fingerprint=manifest.get(FINGERPRINT_KEY),
                               unrecorded_encoder=args.unrecorded_encoder or "refuse")
    if args.topics is None:
        return vectors
    wanted = load_topics(args.topics, args.split)
    missing = [qid for qid in wanted if qid not in vectors]
    if missing:
        raise DataError(args.pre_encoded, None, f"{len(missing)} of the {len(wanted)} topics have no vector "
                        f"(e.g. {missing[0]!r})", "encode the same topics and split, or leave --topics out")
    return {qid: vectors[qid] for qid in wanted}


def run_manifest_path(output: str | os.PathLike) -> Path:
    return Path(f"{output}.manifest.json")


def _is_run_manifest(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("format") == RUN_MANIFEST_FORMAT


def claim_run_manifest(output: str | os.PathLike) -> None:
    """Refuse a run whose ``RUN.manifest.json`` sidecar would overwrite a file this toolkit did not write."""
    from .outputs import claim_file

    claim_file(run_manifest_path(output), flag="--output", ours=_is_run_manifest)


def _write_run_manifest(args: argparse.Namespace, searcher, backend: Backend) -> None:
    """``RUN.manifest.json`` beside the run when queries were encoded here: the query encoder's kernels
    (``quantize`` among them) beside the index's encoding, which may differ (an int8 query encoder searching a
    full-precision index is the point of ``--quantize``)."""
    record = getattr(getattr(searcher, "queries", None), "record", lambda: None)()
    if record is None:
        return
    from .outputs import write_json_atomic

    claim_run_manifest(args.output)
    index_manifest = getattr(searcher, "manifest", None) or {}
    write_json_atomic(run_manifest_path(args.output), {
        "format": RUN_MANIFEST_FORMAT, "run": str(args.output), "index": str(args.index),
        "backend": backend.name, "query_encoding": record,
        "index_encoding": {"quantize": index_manifest.get("encoding_quantize", "none")}})


@cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.topics is None and args.pre_encoded is None:
        parser.error("give --topics (or --pre-encoded FILE)")
    if args.pre_encoded and args.encoder:
        parser.error("--encoder and --pre-encoded exclude each other: pre-encoded queries are already encoded")
    require_at_least(1, {"--hits": args.hits, "--threads": args.threads, "--batch-size": args.batch_size,
                         "--query-cut": args.query_cut, "--ef-search": args.ef_search, "--depth": args.depth})
    require_at_least(0, {"--rrf.k": args.rrf_k})
    require_output_file("--output", args.output)
    claim_run_file(args.output)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if len(args.index) > 1:
        return _search_fused(args)
    _single_index_only(args)
    args.index = args.index[0]
    kind = kind_of(args.index)
    if args.bm25 and kind != "bm25":
        raise IndexFolderError(f"{args.index}: --bm25 given but this is not a BM25 index")
    backend = find_backend(kind, args.backend, where=args.index)
    if kind != "bm25" and args.pre_encoded is None:
        claim_run_manifest(args.output)  # queries are encoded here: a sidecar will be written
    options = searcher_options(args, backend, args.index)
    topics = _queries(args)
    jvm.expect_queries(len(topics))  # a short run starts Anserini's JVM with its quick compiler
    searcher = backend.open(args.index, **options)
    _search_and_write(args, searcher, topics)
    _write_run_manifest(args, searcher, backend)
    return 0


def _single_index_only(args: argparse.Namespace) -> None:
    given = [flag for flag, value in (("--fusion", args.fusion), ("--rrf.k", args.rrf_k), ("--alpha", args.alpha),
                                      ("--depth", args.depth)) if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: fusion options need two or more --index")


def _search_and_write(args: argparse.Namespace, searcher, topics: dict) -> None:
    start = time.perf_counter()
    run = search_topics(searcher, topics, hits=args.hits, remove_query=args.remove_query, threads=args.threads,
                        progress=None)
    elapsed = time.perf_counter() - start
    write_trec_run(run, args.output)
    logger.info("%d queries in %.1f s (%.1f q/s) -> %s", len(run), elapsed, len(run) / max(elapsed, 1e-9), args.output)


def _search_fused(args: argparse.Namespace) -> int:
    """Several ``--index``: each searched with its default backend and the backend flags it takes, runs fused."""
    for flag, value in (("--backend", args.backend), ("--pre-encoded", args.pre_encoded), ("--bm25", args.bm25)):
        if value:
            raise UsageError(f"{flag} applies to one index; with several --index each is searched with its "
                             "default backend and its own query encoder")
    if args.alpha is not None and args.fusion != "interpolation":
        raise UsageError("--alpha applies to --fusion interpolation")
    settings = FusionSettings(args.fusion or "rrf", DEFAULT_RRF_K if args.rrf_k is None else args.rrf_k,
                              DEFAULT_ALPHA if args.alpha is None else args.alpha, args.depth, None)
    given = {option.keyword for b in all_backends() for option in b.options if getattr(args, option.keyword) is not None}
    topics = load_topics(args.topics, args.split)
    jvm.expect_queries(len(topics))
    searcher = open_fused(args.index, settings, **{keyword: getattr(args, keyword) for keyword in given})
    try:
        _search_and_write(args, searcher, topics)
    finally:
        searcher.close()
    from .outputs import write_json_atomic

    write_json_atomic(f"{args.output}.manifest.json", {
        "format": "laconic-pyserini/run", "run": str(args.output), "index": [str(i) for i in args.index],
        "fusion": settings.to_dict(), "query_encoding": [getattr(getattr(part, "queries", None), "record",
                                                                lambda: None)() for part in searcher.parts]})
    return 0

if __name__ == "__main__":
    sys.exit(main())
