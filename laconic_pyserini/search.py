"""Search topics against an index and write a TREC run.

    python -m laconic_pyserini.search [--bm25] --index DIR --topics BEIR_DIR_OR_NAME_OR_FILE [--split test]
        --output RUN [--hits 1000] [--remove-query] [--threads N]
        [--encoder SPEC_OR_PATH | --pre-encoded FILE] [--batch-size B] [--backend lucene|seismic|faiss]
        [--query-cut N] [--heap-factor F]

The searcher is chosen by the index's ``manifest.json`` (and ``--backend`` among those that fit its kind).
For an impact index, query texts are encoded with the index's own encoder (or ``--encoder``, which must have the
same contract), or ``--pre-encoded FILE`` (``qid<TAB>term term…`` or JSONL vectors from
``python -m laconic_pyserini.encode.query``) supplies the vectors; with ``--topics`` as well, only the topics'
ids are searched. ``--backend seismic`` searches an approximate Seismic index built once beside the Lucene one.

``--remove-query`` drops hits whose doc id equals the query id (BEIR's convention for ArguAna, Quora and
CQADupStack; Anserini's ``-removeQuery``); one extra hit is retrieved so that a run still has ``--hits`` hits per
query.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from .data import DataError, load_topics
from .run import Run, remove_self_hits, write_trec_run
from .searchers import Searcher, open_searcher

logger = logging.getLogger(__name__)


def search_topics(searcher: Searcher, topics: dict[str, str], *, hits: int = 1000, remove_query: bool = False,
                  threads: int = 1) -> Run:
    """Run every topic; with ``remove_query``, self-hits are dropped and the list cut back to ``hits``."""
    run = searcher.batch_search(topics, hits + 1 if remove_query else hits, threads)
    if remove_query:
        run = {q: remove_self_hits(q, found)[:hits] for q, found in run.items()}
    return run


#: Search backends by index kind; the first is the default. A new backend adds itself here and to
#: :func:`backend_options` (its options) and :func:`laconic_pyserini.searchers.open_searcher` (its class).
BACKENDS = {"bm25": ("lucene",), "impact": ("lucene", "seismic"), "faiss": ("faiss",), "milvus": ("milvus",)}


def backend_options(args: argparse.Namespace, kind: str | None, backend: str) -> dict:
    """Keyword options for the searcher of ``kind``/``backend`` from the CLI flags that apply to it."""
    options: dict = {}
    if kind == "impact":
        options.update(batch_size=args.batch_size, device=args.device)
        if args.encoder:
            options["encoder"] = args.encoder
        if backend == "seismic":
            options.update({name: value for name, value in (("query_cut", args.query_cut),
                                                             ("heap_factor", args.heap_factor)) if value is not None})
    if kind == "milvus":  # a milvus:// collection, sparse or dense
        options.update(batch_size=args.batch_size, device=args.device, encoder=args.encoder,
                       query_weights=args.query_weights)
    if kind == "faiss":  # dense: queries encoded by the index's own dense spec (or a compatible --encoder)
        options.update(batch_size=args.batch_size, device=args.device, encoder=args.encoder, ef_search=args.ef_search)
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bm25", action="store_true", help="insist that the index is a BM25 index")
    parser.add_argument("--index", required=True,
                        help="index folder built by laconic_pyserini.index, or milvus://HOST:PORT/COLLECTION")
    parser.add_argument("--topics", help="BEIR folder, dataset name, or topics .tsv/.jsonl (or give --pre-encoded)")
    parser.add_argument("--split", default="test", help="qrels split whose judged queries are searched")
    parser.add_argument("--output", required=True, help="TREC run to write")
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--remove-query", action="store_true", help="drop hits whose doc id equals the query id")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default=None,
                        help="search backend for the index kind (impact: lucene (default) or seismic; faiss: faiss)")
    queries = parser.add_mutually_exclusive_group()
    queries.add_argument("--encoder", help="query encoder (spec name or model folder); default: the index's own")
    queries.add_argument("--pre-encoded", help="pre-encoded queries: qid<TAB>term term… (.tsv) or JSONL vectors")
    parser.add_argument("--batch-size", type=int, default=32, help="query-encoding batch size")
    parser.add_argument("--device", default="cpu", help="query-encoding device")
    parser.add_argument("--query-cut", type=int, default=None, help="seismic: query terms looked up (default 10)")
    parser.add_argument("--heap-factor", type=float, default=None, help="seismic: block-skipping factor (default 0.7)")
    parser.add_argument("--ef-search", type=int, default=None, help="faiss HNSW: search breadth (default: the index's)")
    parser.add_argument("--query-weights", choices=("impact", "float"), default="impact",
                        help="milvus sparse: send integer impacts (Lucene's scores, default) or the encoder's floats")
    return parser


def _queries(args: argparse.Namespace, manifest: dict) -> dict:
    """Topic texts, or pre-encoded vectors (restricted to the topics' ids when --topics is given too)."""
    if not args.pre_encoded:
        return load_topics(args.topics, args.split)
    from .searchers.queries import read_pre_encoded
    from .spec import EncoderSpec

    vectors = read_pre_encoded(args.pre_encoded, EncoderSpec.from_dict(manifest["spec"], source=args.index))
    if args.topics is None:
        return vectors
    wanted = load_topics(args.topics, args.split)
    missing = [qid for qid in wanted if qid not in vectors]
    if missing:
        raise DataError(args.pre_encoded, None, f"{len(missing)} of the {len(wanted)} topics have no vector "
                        f"(e.g. {missing[0]!r})", "encode the same topics and split, or leave --topics out")
    return {qid: vectors[qid] for qid in wanted}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.topics is None and args.pre_encoded is None:
        parser.error("give --topics (or --pre-encoded FILE)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from .index.manifest import IndexFolderError, read_index_manifest
    from .spec import SpecError

    try:
        if args.index.startswith("milvus"):
            from .searchers.milvus import read_collection_manifest

            manifest = read_collection_manifest(args.index)
        else:
            manifest = read_index_manifest(args.index)
        kind = manifest.get("kind")
        if args.bm25 and kind != "bm25":
            raise IndexFolderError(f"{args.index}: --bm25 given but this is not a BM25 index")
        backends = BACKENDS.get(kind, ())
        backend = args.backend or (backends[0] if backends else None)
        if backend is not None and backend not in backends:
            choices = " or ".join(backends) if backends else "no other backend"
            raise IndexFolderError(f"{args.index}: a {kind!r} index is searched with {choices}, "
                                   f"not --backend {backend}")
        if kind not in ("impact", "milvus") and (args.pre_encoded or (args.encoder and kind != "faiss")):
            raise IndexFolderError(f"{args.index}: --encoder and --pre-encoded apply to impact indexes, "
                                   f"not to a {kind!r} index")
        topics = _queries(args, manifest)
        searcher = open_searcher(args.index, backend=backend, **backend_options(args, kind, backend))
        start = time.perf_counter()
        run = search_topics(searcher, topics, hits=args.hits, remove_query=args.remove_query, threads=args.threads)
        elapsed = time.perf_counter() - start
    except (DataError, IndexFolderError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_trec_run(run, args.output)
    logger.info("%d queries in %.1f s (%.1f q/s) -> %s", len(run), elapsed, len(run) / max(elapsed, 1e-9), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
