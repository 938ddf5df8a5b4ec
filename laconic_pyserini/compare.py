"""Side-by-side comparison of retrieval systems on one dataset: effectiveness, index size, memory, speed.

    python -m laconic_pyserini.compare --dataset BEIR_DIR_OR_NAME [--split test] --output DIR
        [--system bm25] [--system sparse:SPEC] [--system dense:SPEC] [--system dense-hnsw:SPEC] ...
        [--hits 1000] [--serve-hits 10] [--keep-self-hits] [--batch-size 32] [--threads 1] [--work DIR]

Without ``--system`` it compares the offline defaults: BM25, ``sparse:rasyosef/splade-tiny`` and
``dense:sentence-transformers/all-MiniLM-L6-v2`` (found under ``$LACONIC_MODELS``). ``sparse:laconic-1b`` is the
LACONIC paper's comparison where the hub is reachable. ``KIND:INDEX_DIR`` (e.g. ``sparse:indexes/scifact.splade``)
uses an index already built by this package for the same corpus, as is. ``hybrid:bm25+sparse:splade-tiny`` (any
two or more systems joined by ``+``) is the RRF fusion of its parts' runs, reported beside them, its latency and
memory the sum of theirs (:mod:`laconic_pyserini.compare_hybrid`).

For every system: build its index (encode → index; reused when the index manifest records the same encoder spec,
corpus and index settings), then serve it in a fresh child process -- load, one warm-up query, every topic one at a
time with query encoding and search timed apart (search at ``--hits``, the depth evaluated, and at
``--serve-hits``, the depth a user is shown), resident memory before and after -- and evaluate the run that
those very calls returned (self-hits dropped, as BEIR does, unless ``--keep-self-hits``). Writes ``DIR/report.md``, ``DIR/report.json`` and ``DIR/report.png``
(see :mod:`laconic_pyserini.report`); indexes and runs live under ``DIR/systems/`` (or ``--work``).

The console gets one line per stage (``[2/3] sparse:splade-tiny — encode 5,183 docs``), progress bars when it is
a terminal (:func:`laconic_pyserini.console.progress_enabled`), warnings, and at the end the table, where the
reports are and the total time; this package's log records and everything Anserini, the JVM and the serving
children print go to ``DIR/logs/compare.log``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .compare_hybrid import hybrid_row, is_hybrid, parse_hybrid, with_parts
from .console import ConsoleHandler, captured, log_file, say
from .data import resolve_dataset
from .errors import cli, require_at_least
from .topics import load_qrels, load_topics
from .eval import DEFAULT_MEASURES, evaluate
from .index.manifest import IndexFolderError, read_index_manifest
from .outputs import open_folder, write_json_atomic
from .spec import EncoderSpec, SpecError, load_spec

logger = logging.getLogger(__name__)

DEFAULT_SYSTEMS = ("bm25", "sparse:rasyosef/splade-tiny", "dense:sentence-transformers/all-MiniLM-L6-v2")
SYSTEM_KINDS = {"bm25": "bm25", "sparse": "sparse", "dense": "dense", "dense-hnsw": "dense"}
BUILD_RECORD = "build.json"
#: What the --output folder's manifest.json says it is (reports and, by default, the systems built for them).
REPORT_KIND = "compare"
#: Inside --output: this package's log records, Anserini's and the JVM's output, the serving children's.
LOG_FILE = Path("logs") / "compare.log"


@dataclass(frozen=True)
class System:
    """One ``--system`` argument: ``bm25``, ``sparse:SPEC``, ``dense:SPEC`` or ``dense-hnsw:SPEC``."""

    name: str
    kind: str            # bm25 | sparse | dense
    spec: EncoderSpec | None
    index_type: str      # lucene | flat | hnsw
    index: Path | None = None  # an index built elsewhere, used as is (``sparse:/path/to/index``)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name)


def parse_system(arg: str) -> System:
    """``--system`` → :class:`System`; the spec's kind must agree with the system's (a dense spec is not sparse)."""
    head, _, encoder = arg.partition(":")
    if head not in SYSTEM_KINDS:
        raise SpecError(f"--system {arg!r}: start with one of {', '.join(SYSTEM_KINDS)} "
                        "(bm25, sparse:SPEC, dense:SPEC, dense-hnsw:SPEC)")
    kind = SYSTEM_KINDS[head]
    if encoder and (Path(encoder) / "manifest.json").is_file():
        return _existing_index(arg, head, kind, Path(encoder))
    if kind == "bm25":
        if encoder:
            raise SpecError(f"--system {arg!r}: bm25 takes no encoder")
        return System("bm25", "bm25", None, "lucene")
    if not encoder:
        raise SpecError(f"--system {arg!r}: name an encoder, e.g. {head}:minilm")
    spec = load_spec(encoder)
    if (spec.kind == "dense") != (kind == "dense"):
        raise SpecError(f"--system {arg!r}: encoder {spec.name!r} is {spec.kind}; use "
                        f"{'dense' if spec.kind == 'dense' else 'sparse'}:{encoder}")
    index_type = "hnsw" if head == "dense-hnsw" else ("flat" if kind == "dense" else "lucene")
    return System(f"{head}:{spec.name}", kind, spec, index_type)


_INDEX_KINDS = {"bm25": "bm25", "sparse": "impact", "dense": "faiss"}


def _existing_index(arg: str, head: str, kind: str, index_dir: Path) -> System:
    """A system whose index was built elsewhere (by this package): named by its manifest, used unchanged."""
    manifest = read_index_manifest(index_dir)
    if manifest.get("kind") != _INDEX_KINDS[kind]:
        raise SpecError(f"--system {arg!r}: {index_dir} is a {manifest.get('kind')!r} index, not "
                        f"{_INDEX_KINDS[kind]!r}")
    spec = EncoderSpec.from_dict(manifest["spec"], source=str(index_dir / "manifest.json")) if kind != "bm25" else None
    index_type = manifest.get("index_type", "lucene")
    label = "bm25" if kind == "bm25" else f"{'dense-hnsw' if index_type == 'hnsw' else kind}:{spec.name}"
    return System(label, kind, spec, index_type, index_dir.resolve())


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------ building


def _build_key(system: System, corpus: dict) -> dict:
    return {"system": system.name, "kind": system.kind, "index_type": system.index_type,
            "spec": system.spec.to_dict() if system.spec else None,
            "corpus": {k: corpus[k] for k in ("path", "bytes", "lines")}}


def build_system(system: System, dataset: Path, work: Path, *, batch_size: int = 32, threads: int = 2,
                 reuse: bool = True, docs_as_queries: bool = False,
                 tell: Callable[[str], None] = lambda _: None) -> dict:
    """Build (or reuse) the system's index under ``work``; returns the build record (index path, timings).

    ``docs_as_queries``: the documents take the query prefix (BEIR Quora, CQADupStack), decided by the caller from
    the dataset's name, since ``dataset`` here is already a folder. ``tell`` hears each stage as it begins.
    """
    from .encode.source import describe_corpus

    corpus = describe_corpus(dataset)
    if system.index is not None:
        tell(f"use the index {system.index}")
        return _adopt(system, corpus)
    key = _build_key(system, corpus)
    folder = work / system.slug
    record_path = folder / BUILD_RECORD
    index_dir = folder / "index"
    if reuse and record_path.is_file() and index_dir.is_dir():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        try:
            manifest = read_index_manifest(index_dir)
        except IndexFolderError:
            manifest = None
        if record.get("key") == key and manifest is not None and manifest.get("documents") == corpus["lines"]:
            logger.info("%s: reusing %s", system.name, index_dir)
            tell(f"reuse the index {index_dir}")
            return record
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    encode_seconds, extra = _build_index(system, dataset, folder, work, key, batch_size=batch_size, threads=threads,
                                         docs_as_queries=docs_as_queries, tell=tell)
    manifest = read_index_manifest(index_dir)
    record = {"key": key, "index": str(index_dir), "documents": manifest["documents"],
              "encode_seconds": round(encode_seconds, 3), "build_seconds": round(time.perf_counter() - start, 3),
              **extra}
    if system.kind == "dense":
        record["dimension"] = manifest["dimension"]
    write_json_atomic(record_path, record)
    return record


def _build_index(system: System, dataset: Path, folder: Path, work: Path, key: dict, *, batch_size: int,
                 threads: int, docs_as_queries: bool, tell: Callable[[str], None]) -> tuple[float, dict]:
    """Encode and index one system into ``folder/index``; returns the encoding seconds and extra record fields."""
    index_dir = folder / "index"
    start = time.perf_counter()
    extra: dict = {}
    docs = key["corpus"]["lines"]
    if system.kind == "bm25":
        tell(f"index {docs:,} docs (Anserini)")
        from .index.lucene import build_bm25_index

        build_bm25_index(dataset, index_dir, threads=threads)
        encode_seconds = time.perf_counter() - start  # BM25's "encoding" is Anserini's indexing
    elif system.kind == "sparse":
        from .encode import encode_corpus
        from .index.impact import build_impact_index

        tell(f"encode {docs:,} docs")
        encoded = encode_corpus(dataset, folder / "encoded", system.spec, batch_size=batch_size,
                                docs_as_queries=docs_as_queries)
        encode_seconds = time.perf_counter() - start
        tell(f"index {docs:,} docs (Anserini impact index)")
        build_impact_index(folder / "encoded", index_dir, threads=threads)
        counts = encoded.counts
        extra["avg_doc_terms"] = round(counts["terms"] / max(counts["documents"], 1), 2)
    else:
        from .encode.dense import encode_dense_corpus
        from .index.faiss import rebuild_faiss_index

        flat = _flat_sibling(system, work, key)
        if flat is not None:  # HNSW over vectors already encoded for the flat system: no second encoding
            tell(f"index {docs:,} vectors already encoded ({system.index_type})")
            rebuild_faiss_index(flat, index_dir, system.index_type)
        else:
            tell(f"encode {docs:,} docs, then index them (faiss {system.index_type})")
            encode_dense_corpus(dataset, system.spec, index_dir, index_type=system.index_type, batch_size=batch_size,
                                as_query=docs_as_queries)
        encode_seconds = read_index_manifest(index_dir)["encode_seconds"]
    return encode_seconds, extra


def _adopt(system: System, corpus: dict) -> dict:
    """The build record of an index given by path; its corpus must be the dataset's (same file, same size)."""
    manifest = read_index_manifest(system.index)
    recorded = manifest.get("corpus") or {}
    if manifest.get("documents") != corpus["lines"] or (recorded.get("bytes") not in (None, corpus["bytes"])):
        raise IndexFolderError(f"{system.index}: indexes {manifest.get('documents')} documents "
                               f"({recorded.get('path', manifest.get('source'))}), not the dataset's {corpus['lines']} "
                               f"({corpus['path']}); pass an index of this dataset")
    seconds = manifest.get("encode_seconds")  # faiss folders record it; Lucene ones do not
    record = {"key": None, "index": str(system.index), "documents": manifest["documents"],
              "encode_seconds": seconds, "build_seconds": None, "adopted": True}
    if system.kind == "dense":
        record["dimension"] = manifest["dimension"]
    if system.kind == "sparse" and manifest.get("encoding_counts"):
        counts = manifest["encoding_counts"]
        record["avg_doc_terms"] = round(counts["terms"] / max(counts["documents"], 1), 2)
    return record


def _flat_sibling(system: System, work: Path, key: dict) -> Path | None:
    """The index folder of an already built flat system with the same encoder and corpus, if any."""
    if system.index_type == "flat":
        return None
    flat = System(f"dense:{system.spec.name}", "dense", system.spec, "flat")
    record_path = work / flat.slug / BUILD_RECORD
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text(encoding="utf-8"))
    wanted = dict(key, system=flat.name, index_type="flat")
    return Path(record["index"]) if record.get("key") == wanted and Path(record["index"]).is_dir() else None


# ------------------------------------------------------------------------------------------------ comparing


def compare(dataset: str | os.PathLike, systems: Sequence[str | System] = DEFAULT_SYSTEMS, output: str | os.PathLike = "compare",
            *, split: str = "test", hits: int = 1000, remove_query: bool = True, batch_size: int = 32,
            threads: int = 1, build_threads: int = 2, work: str | os.PathLike | None = None,
            reuse: bool = True, serve_hits: int = 10) -> dict:
    """Build, serve, evaluate every system; write ``report.{md,json,png}`` under ``output``; return the report."""
    from . import report as report_module

    parsed = [s if not isinstance(s, str) else parse_hybrid(s, parse_system) if is_hybrid(s) else parse_system(s)
              for s in systems]
    names = [s.name for s in parsed]
    if len(set(names)) != len(names):
        raise SpecError(f"--system given twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    from .encode.source import resolve_docs_as_queries

    questions = resolve_docs_as_queries(dataset)
    dataset_dir = resolve_dataset(dataset)
    output = open_folder(output, REPORT_KIND, flag="--output", inputs=[dataset_dir], ours=_earlier_report,
                         dataset=str(dataset))
    work_dir = Path(work) if work else output / "systems"
    topics = load_topics(dataset_dir, split)
    qrels = load_qrels(dataset_dir, split)
    log = output / LOG_FILE
    measured, done = with_parts(parsed), {}  # a hybrid's parts are measured (and reported) before it
    with log_file(log):
        for number, system in enumerate(measured, 1):
            prefix = f"[{number}/{len(measured)}] {system.name}"
            if is_hybrid(system):
                say(f"{prefix} — fuse its parts' runs (costs: their sum)")
                done[system.name] = hybrid_row(system, [done[part.name] for part in system.parts], list(topics),
                                               work_dir / system.slug / f"run.{split}.trec",
                                               lambda run: _metrics(qrels, run))
                continue
            done[system.name] = _compare_one(system, prefix, dataset_dir, work_dir, topics, qrels, log, split=split,
                                             hits=hits, remove_query=remove_query, batch_size=batch_size,
                                             threads=threads, build_threads=build_threads, reuse=reuse,
                                             questions=questions, serve_hits=serve_hits)
    rows = [done[system.name][0] for system in measured]
    result = {"dataset": str(dataset), "dataset_dir": str(dataset_dir), "split": split, "queries": len(topics),
              "hits": hits, "serve_hits": serve_hits, "remove_query": remove_query, "machine": report_module.machine(),
              "systems": rows, "comparisons": report_module.sparse_dense_ratios(rows)}
    report_module.write_reports(result, output)
    return result


def _compare_one(system: System, prefix: str, dataset_dir: Path, work_dir: Path, topics: dict, qrels: dict,
                 log: Path, *, split: str, hits: int, remove_query: bool, batch_size: int, threads: int,
                 build_threads: int, reuse: bool, questions: bool, serve_hits: int) -> tuple[dict, object]:
    """Build, serve and evaluate one system, saying each stage on the console; returns its report row and its
    serving stats."""
    from .run import read_trec_run
    from .serving import measure_in_child

    def tell(what: str) -> None:
        logger.info("%s: %s", prefix, what)
        say(f"{prefix} — {what}")

    start = time.perf_counter()
    with captured(log):  # Anserini and the JVM write straight to fds 1 and 2
        record = build_system(system, dataset_dir, work_dir, batch_size=batch_size, threads=build_threads,
                              reuse=reuse, docs_as_queries=questions, tell=tell)
    run_path = work_dir / system.slug / f"run.{split}.trec"
    tell(f"serve {len(topics):,} queries one at a time (a fresh process)")
    stats = measure_in_child(record["index"], topics, run_path, log=log, hits=hits, remove_query=remove_query,
                             threads=threads, batch_size=batch_size, serve_hits=serve_hits)
    metrics = _metrics(qrels, read_trec_run(run_path))
    scores = ", ".join(f"{m} {metrics[m]:.4f}" for m in DEFAULT_MEASURES)
    tell(f"evaluate: {scores} ({time.perf_counter() - start:,.0f} s)")
    return _row(system, record, stats, metrics, run_path), stats


def _metrics(qrels: dict, run: dict) -> dict:
    return {m: round(v, 4) for m, v in evaluate(qrels, run, DEFAULT_MEASURES).items()}


def _earlier_report(folder: Path) -> bool:
    """A compare output of a version that wrote no manifest: a report, or build records of its systems."""
    return (folder / "report.json").is_file() or any(folder.glob("systems/*/" + BUILD_RECORD))


def _row(system: System, record: dict, stats, metrics: dict, run_path: Path) -> dict:
    index_dir = Path(record["index"])
    docs = record["documents"]
    row = {
        "name": system.name, "kind": system.kind, "index_type": system.index_type,
        "encoder": system.spec.to_dict() if system.spec else None,
        "metrics": {m: metrics[m] for m in DEFAULT_MEASURES},
        "index_bytes": _folder_bytes(index_dir),
        "serving_rss_bytes": stats.rss_served_bytes,
        "serving_rss_loaded_bytes": stats.rss_loaded_bytes,
        "process_base_rss_bytes": stats.rss_start_bytes,
        "encode_docs_per_s": round(docs / record["encode_seconds"], 2) if record.get("encode_seconds") else None,
        "query_latency_ms": stats.latency_summary(),
        "load_seconds": stats.load_seconds,
        "documents": docs, "queries": stats.queries, "search_threads": stats.threads,
        "index": str(index_dir), "run": str(run_path),
    }
    if system.kind == "sparse":
        row["avg_doc_terms"] = record.get("avg_doc_terms")
        row["avg_query_terms"] = stats.avg_query_terms
    if system.kind == "dense":
        row["dimension"] = record.get("dimension")
    return row


@cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="BEIR folder or dataset name")
    parser.add_argument("--split", default="test")
    parser.add_argument("--system", action="append", dest="systems",
                        help="bm25 | sparse:SPEC | dense:SPEC | dense-hnsw:SPEC | hybrid:SYSTEM+SYSTEM[+…] (RRF of "
                             "its parts, which are measured too) (repeatable; default: "
                             + ", ".join(DEFAULT_SYSTEMS) + ")")
    parser.add_argument("--output", required=True, help="report folder (report.md, report.json, report.png)")
    parser.add_argument("--work", help="where indexes and runs are built and reused (default OUTPUT/systems)")
    parser.add_argument("--hits", type=int, default=1000, help="hits per query in the run evaluated")
    parser.add_argument("--serve-hits", type=int, default=10,
                        help="hits per query a user is served: search latency is also timed at this depth")
    parser.add_argument("--keep-self-hits", action="store_true",
                        help="keep hits whose doc id equals the query id (by default they are dropped, as BEIR's "
                             "evaluator and Anserini's 2CR do on every BEIR dataset)")
    parser.add_argument("--batch-size", type=int, default=32, help="encoding batch size")
    parser.add_argument("--threads", type=int, default=1, help="threads while serving and timing queries")
    parser.add_argument("--build-threads", type=int, default=2, help="Anserini indexing threads")
    parser.add_argument("--no-reuse", action="store_true", help="rebuild every index even when one fits")
    args = parser.parse_args(argv)
    require_at_least(1, {"--hits": args.hits, "--serve-hits": args.serve_hits, "--batch-size": args.batch_size,
                         "--threads": args.threads, "--build-threads": args.build_threads})
    # The console hears warnings; every INFO record goes to OUTPUT/logs/compare.log (see compare()).
    handler = ConsoleHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    start = time.perf_counter()
    compare(args.dataset, args.systems or DEFAULT_SYSTEMS, args.output, split=args.split,
            hits=args.hits, remove_query=not args.keep_self_hits, batch_size=args.batch_size,
            threads=args.threads, build_threads=args.build_threads, work=args.work,
            reuse=not args.no_reuse, serve_hits=args.serve_hits)
    output = Path(args.output)
    print((output / "report.md").read_text(encoding="utf-8"))
    print(f"report: {output / 'report.md'} and {output / 'report.png'} (data: {output / 'report.json'})")
    print(f"log:    {output / LOG_FILE}")
    print(f"total:  {_duration(time.perf_counter() - start)}")
    return 0


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


if __name__ == "__main__":
    sys.exit(main())
