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

from .run import Hits, remove_self_hits, write_trec_run

logger = logging.getLogger(__name__)

KINDS = ("bm25", "sparse", "dense")


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


class _Adapter:
    """encode(text) -> query representation; search(representation, k) -> hits; one per kind of index."""

    def __init__(self, kind: str, index_dir: str, batch_size: int) -> None:
        from .searchers import open_searcher

        self.kind = kind
        self.searcher = open_searcher(index_dir, **({"batch_size": batch_size} if kind != "bm25" else {}))

    def encode(self, text: str):
        if self.kind == "bm25":
            return text  # Lucene analyses the text inside search: BM25 has no separate encoding step
        if self.kind == "sparse":
            return self.searcher.queries.encode([text])[0]
        return self.searcher.encode_queries([text])

    def search(self, encoded, k: int) -> Hits:
        if self.kind == "bm25":
            return self.searcher.search(encoded, k)
        if self.kind == "sparse":
            return self.searcher.search_vector(encoded, k)
        return self.searcher.search_vectors(encoded, k)[0]


def measure_serving(kind: str, index_dir: str, topics: dict[str, str], run_path: str, *, hits: int = 1000,
                    remove_query: bool = False, threads: int = 1, batch_size: int = 32,
                    serve_hits: int = 10) -> ServingStats:
    """Open ``index_dir``, answer every topic one at a time (timed), write the run to ``run_path``.

    Each query is searched twice, both timed: at ``hits`` (the run evaluated) and at ``serve_hits`` (what a user is
    shown), alternating which goes first so that neither always finds the other's warm caches.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    _limit_threads(threads)
    rss_start = _rss()
    start = time.perf_counter()
    adapter = _Adapter(kind, index_dir, batch_size)
    qids = list(topics)
    k = hits + 1 if remove_query else hits
    if qids:  # warm-up: lazily loaded models and first-touch index pages count as loading, not as a query
        adapter.search(adapter.encode(topics[qids[0]]), k)
    load_seconds = time.perf_counter() - start
    rss_loaded = _rss()
    stats = ServingStats(rss_start_bytes=rss_start, rss_loaded_bytes=rss_loaded, rss_served_bytes=0,
                         load_seconds=round(load_seconds, 3), queries=len(qids), threads=threads, hits=hits,
                         serve_hits=serve_hits)
    serve_k = serve_hits + 1 if remove_query else serve_hits
    run: dict[str, Hits] = {}
    terms = []
    for qid in qids:
        t0 = time.perf_counter()
        encoded = adapter.encode(topics[qid])
        # BM25 has no encoding step of its own (Lucene analyses inside search): its share is 0, not call overhead.
        t1 = t0 if kind == "bm25" else time.perf_counter()
        if len(stats.search_ms) % 2:
            stats.serve_search_ms.append(_timed_ms(adapter.search, encoded, serve_k)[1])
        found, search_ms = _timed_ms(adapter.search, encoded, k)
        if not len(stats.search_ms) % 2:
            stats.serve_search_ms.append(_timed_ms(adapter.search, encoded, serve_k)[1])
        stats.encode_ms.append((t1 - t0) * 1000)
        stats.search_ms.append(search_ms)
        if kind == "sparse":
            terms.append(len(encoded))
        run[qid] = remove_self_hits(qid, found)[:hits] if remove_query else found
    stats.rss_served_bytes = _rss()
    if terms:
        stats.avg_query_terms = round(sum(terms) / len(terms), 2)
    write_trec_run(run, run_path)
    return stats


def _timed_ms(search, encoded, k: int) -> tuple[Hits, float]:
    start = time.perf_counter()
    found = search(encoded, k)
    return found, (time.perf_counter() - start) * 1000


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


def _child(kind: str, index_dir: str, topics: dict[str, str], run_path: str, stats_path: str, options: dict) -> None:
    stats = measure_serving(kind, index_dir, topics, run_path, **options)
    tmp = stats_path + ".tmp"
    Path(tmp).write_text(json.dumps(asdict(stats)), encoding="utf-8")
    os.replace(tmp, stats_path)


def measure_in_child(kind: str, index_dir: str | os.PathLike, topics: dict[str, str], run_path: str | os.PathLike,
                     **options) -> ServingStats:
    """:func:`measure_serving` in a fresh spawned interpreter; a failure there raises here."""
    import multiprocessing

    stats_path = str(Path(run_path).with_suffix(".serving.json"))
    if os.path.exists(stats_path):
        os.remove(stats_path)
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_child, args=(kind, str(index_dir), topics, str(run_path), stats_path, options))
    process.start()
    process.join()
    if process.exitcode != 0 or not os.path.exists(stats_path):
        raise RuntimeError(f"serving {index_dir} in a child process failed (exit code {process.exitcode}); "
                           "see its traceback above")
    data = json.loads(Path(stats_path).read_text(encoding="utf-8"))
    return ServingStats(**data)
