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

from .outputs import remove_temp, temp_path, write_json_atomic
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
    search_ms: list[float] = field(default_factory=list)  # at ``hits``, the depth evaluated (1,000)
    avg_query_terms: float | None = None
    hits: int = 1000
    serve_hits: int = 10  # the depth a user is served: its latency is the engine's, not hit marshalling's
    serve_search_ms: list[float] = field(default_factory=list)

    def latency_summary(self) -> dict[str, float]:
        total = [e + s for e, s in zip(self.encode_ms, self.search_ms)]
        return {"encode_p50": _percentile(self.encode_ms, 50), "search_p50": _percentile(self.search_ms, 50),
                "total_p50": _percentile(total, 50), "encode_p95": _percentile(self.encode_ms, 95),
                "search_p95": _percentile(self.search_ms, 95), "total_p95": _percentile(total, 95),
                "search_hits": self.hits, "serve_hits": self.serve_hits,
                "serve_search_p50": _percentile(self.serve_search_ms, 50),
                "serve_search_p95": _percentile(self.serve_search_ms, 95)}


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
                    remove_query: bool = False, threads: int = 1, batch_size: int = 32,
                    serve_hits: int = 10) -> ServingStats:
    """Open ``index_dir`` (its searcher from the registry), answer every topic one at a time (timed), write the run
    to ``run_path``; torch and faiss run on ``threads`` threads meanwhile, and on their earlier counts afterwards.

    Each query is searched twice, both timed: at ``hits`` (the run evaluated) and at ``serve_hits`` (what a user is
    shown), alternating which goes first so that neither always finds the other's warm caches.
    """
    from .modeling.cpu import threads as scoped_threads

    with scoped_threads(threads):
        return _measure_serving(index_dir, topics, run_path, hits=hits, remove_query=remove_query, threads=threads,
                                batch_size=batch_size, serve_hits=serve_hits)


def _measure_serving(index_dir: str, topics: dict[str, str], run_path: str, *, hits: int, remove_query: bool,
                     threads: int, batch_size: int, serve_hits: int) -> ServingStats:
    from .searchers import find_backend, kind_of

    rss_start = _rss()
    start = time.perf_counter()
    backend = find_backend(kind_of(index_dir), where=index_dir)
    searcher = backend.open(index_dir, **({"batch_size": batch_size} if backend.takes("batch_size") else {}))
    qids = list(topics)
    k = fetch_depth(hits, remove_query)
    if qids:  # warm-up: lazily loaded models and first-touch index pages count as loading, not as a query
        searcher.search_encoded(searcher.encode_query(topics[qids[0]]), k)
    stats = ServingStats(rss_start_bytes=rss_start, rss_loaded_bytes=_rss(), rss_served_bytes=0,
                         load_seconds=round(time.perf_counter() - start, 3), queries=len(qids), threads=threads,
                         hits=hits, serve_hits=serve_hits)
    serve_k = fetch_depth(serve_hits, remove_query)
    run: dict[str, Hits] = {}
    terms = []
    for qid in qids:
        t0 = time.perf_counter()
        encoded = searcher.encode_query(topics[qid])
        # BM25 has no encoding step of its own (Lucene analyses inside search): its share is 0, not call overhead.
        t1 = time.perf_counter() if searcher.encodes_queries else t0
        if len(stats.search_ms) % 2:
            stats.serve_search_ms.append(_timed_ms(searcher.search_encoded, encoded, serve_k)[1])
        found, search_ms = _timed_ms(searcher.search_encoded, encoded, k)
        if not len(stats.search_ms) % 2:
            stats.serve_search_ms.append(_timed_ms(searcher.search_encoded, encoded, serve_k)[1])
        stats.encode_ms.append((t1 - t0) * 1000)
        stats.search_ms.append(search_ms)
        if isinstance(encoded, dict):  # a sparse query: its terms are what Lucene looks up
            terms.append(len(encoded))
        run[qid] = kept_hits(qid, found, hits, remove_query)
    stats.rss_served_bytes = _rss()
    if terms:
        stats.avg_query_terms = round(sum(terms) / len(terms), 2)
    write_trec_run(run, run_path)
    return stats


def _child(index_dir: str, topics: dict[str, str], run_path: str, stats_path: str, options: dict) -> None:
    stats = measure_serving(index_dir, topics, run_path, **options)
    write_json_atomic(stats_path, asdict(stats))


def _timed_ms(search, encoded, k: int) -> tuple[Hits, float]:
    start = time.perf_counter()
    found = search(encoded, k)
    return found, (time.perf_counter() - start) * 1000


def measure_in_child(index_dir: str | os.PathLike, topics: dict[str, str], run_path: str | os.PathLike,
                     **options) -> ServingStats:
    """:func:`measure_serving` in a fresh spawned interpreter; a failure there raises here."""
    import multiprocessing

    # A temporary name of this process: a stats file left by an earlier run can never pass for this child's.
    stats_path = str(temp_path(Path(run_path).with_suffix(".serving.json")))
    remove_temp(stats_path)
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_child, args=(str(index_dir), topics, str(run_path), stats_path, options))
    process.start()
    process.join()
    if process.exitcode != 0 or not os.path.exists(stats_path):
        raise RuntimeError(f"serving {index_dir} in a child process failed (exit code {process.exitcode}); "
                           "see its traceback above")
    data = json.loads(Path(stats_path).read_text(encoding="utf-8"))
    remove_temp(stats_path)
    return ServingStats(**data)
