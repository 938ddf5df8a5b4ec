"""What it costs to serve an index: resident memory after loading, and per-query latency split into query
encoding and search.

:func:`measure_in_child` runs :func:`measure_serving` in a fresh (spawned) interpreter, so one system's JVM, torch
threads or model weights never count against another's resident set. Queries are answered one at a time, as an
interactive user would send them; the hits of those same calls are the run that gets evaluated, so the latency
measured is the latency of the numbers reported.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .run import Hits, fetch_depth, kept_hits, write_trec_run

logger = logging.getLogger(__name__)


@dataclass
class ServingStats:
    """Measured in one process that did nothing but load the index and answer the queries."""

    rss_start_bytes: int          # the interpreter with this package imported, before anything was loaded
    rss_loaded_bytes: int         # after opening the searcher and answering one warm-up query (models load lazily)
    rss_served_bytes: int         # after answering every query: what serving this index holds resident
    load_seconds: float
    queries: int
    threads: int
    encode_ms: list[float] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)
    avg_query_terms: float | None = None

    def latency_summary(self) -> dict[str, float]:
        total = [e + s for e, s in zip(self.encode_ms, self.search_ms)]
        return {"encode_p50": _percentile(self.encode_ms, 50), "search_p50": _percentile(self.search_ms, 50),
                "total_p50": _percentile(total, 50), "encode_p95": _percentile(self.encode_ms, 95),
                "search_p95": _percentile(self.search_ms, 95), "total_p95": _percentile(total, 95)}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return round(values[0], 3)
    # statistics.quantiles' "inclusive" method is numpy's default linear interpolation.
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if q < 100 else max(values), 3)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def measure_serving(index_dir: str, topics: dict[str, str], run_path: str, *, hits: int = 1000,
                    remove_query: bool = False, threads: int = 1, batch_size: int = 32) -> ServingStats:
    """Open ``index_dir`` (its searcher from the registry), answer every topic one at a time (timed), write the run
    to ``run_path``."""
    from .searchers import find_backend, kind_of

    _limit_threads(threads)
    rss_start = _rss()
    start = time.perf_counter()
    backend = find_backend(kind_of(index_dir), where=index_dir)
    searcher = backend.open(index_dir, **({"batch_size": batch_size} if backend.takes("batch_size") else {}))
    qids = list(topics)
    k = fetch_depth(hits, remove_query)
    if qids:  # warm-up: lazily loaded models and first-touch index pages count as loading, not as a query
        searcher.search_encoded(searcher.encode_query(topics[qids[0]]), k)
    stats = ServingStats(rss_start_bytes=rss_start, rss_loaded_bytes=_rss(), rss_served_bytes=0,
                         load_seconds=round(time.perf_counter() - start, 3), queries=len(qids), threads=threads)
    run: dict[str, Hits] = {}
    terms = []
    for qid in qids:
        t0 = time.perf_counter()
        encoded = searcher.encode_query(topics[qid])
        # BM25 has no encoding step of its own (Lucene analyses inside search): its share is 0, not call overhead.
        t1 = time.perf_counter() if searcher.encodes_queries else t0
        found = searcher.search_encoded(encoded, k)
        t2 = time.perf_counter()
        stats.encode_ms.append((t1 - t0) * 1000)
        stats.search_ms.append((t2 - t1) * 1000)
        if isinstance(encoded, dict):  # a sparse query: its terms are what Lucene looks up
            terms.append(len(encoded))
        run[qid] = kept_hits(qid, found, hits, remove_query)
    stats.rss_served_bytes = _rss()
    if terms:
        stats.avg_query_terms = round(sum(terms) / len(terms), 2)
    write_trec_run(run, run_path)
    return stats


def _limit_threads(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass


def _child(index_dir: str, topics: dict[str, str], run_path: str, stats_path: str, options: dict) -> None:
    stats = measure_serving(index_dir, topics, run_path, **options)
    tmp = stats_path + ".tmp"
    Path(tmp).write_text(json.dumps(asdict(stats)), encoding="utf-8")
    os.replace(tmp, stats_path)


def measure_in_child(index_dir: str | os.PathLike, topics: dict[str, str], run_path: str | os.PathLike,
                     **options) -> ServingStats:
    """:func:`measure_serving` in a fresh spawned interpreter; a failure there raises here."""
    import multiprocessing

    stats_path = str(Path(run_path).with_suffix(".serving.json"))
    if os.path.exists(stats_path):
        os.remove(stats_path)
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_child, args=(str(index_dir), topics, str(run_path), stats_path, options))
    process.start()
    process.join()
    if process.exitcode != 0 or not os.path.exists(stats_path):
        raise RuntimeError(f"serving {index_dir} in a child process failed (exit code {process.exitcode}); "
                           "see its traceback above")
    data = json.loads(Path(stats_path).read_text(encoding="utf-8"))
    return ServingStats(**data)
