"""Hybrid systems in ``compare``: ``hybrid:bm25+sparse:splade-tiny``, ``hybrid:sparse:A+dense:B``, and so on.

A hybrid's parts are ordinary systems: each is built, served alone in a fresh process and evaluated as if named
on its own (a part not named on its own is added to the comparison, so a hybrid is always reported beside its
parts). The hybrid's run is the RRF fusion of the parts' runs (:mod:`laconic_pyserini.fusion`, pyserini's
arithmetic, every hit of every part considered), and its costs are the sum of what it runs: per query, the parts'
encoding and search latencies plus the time fusion took for that query; index size, resident memory and load time
summed over the parts' processes: what the hybrid costs in CPU time, and per query what
:class:`~laconic_pyserini.searchers.fused.FusedSearcher` pays, which searches its parts one after the other.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .fusion import FusionSettings, fuse
from .run import read_trec_run, write_trec_run
from .spec import SpecError

PREFIX = "hybrid:"


@dataclass(frozen=True)
class HybridSystem:
    """One ``--system hybrid:PART+PART[+PART]``; ``parts`` are compare's systems."""

    name: str
    parts: tuple[Any, ...]
    fusion: FusionSettings = FusionSettings()
    kind: str = "hybrid"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name)


def is_hybrid(arg: Any) -> bool:
    return isinstance(arg, HybridSystem) or (isinstance(arg, str) and arg.startswith(PREFIX))


def parse_hybrid(arg: str, parse_part: Callable[[str], Any]) -> HybridSystem:
    """``hybrid:bm25+sparse:splade-tiny`` → a :class:`HybridSystem` of the parts ``parse_part`` makes."""
    pieces = arg.removeprefix(PREFIX).split("+")
    if len(pieces) < 2 or not all(pieces):
        raise SpecError(f"--system {arg!r}: name two or more systems joined by '+', e.g. "
                        "hybrid:bm25+sparse:splade-tiny")
    parts = tuple(parse_part(piece) for piece in pieces)
    names = [part.name for part in parts]
    if len(set(names)) != len(names):
        raise SpecError(f"--system {arg!r}: a part is named twice")
    return HybridSystem(PREFIX + "+".join(names), parts)


def with_parts(systems: Sequence[Any]) -> list[Any]:
    """``systems`` with every hybrid's parts before it (each system once, in the order first named)."""
    ordered: dict[str, Any] = {}
    for system in systems:
        for part in getattr(system, "parts", ()):
            ordered.setdefault(part.name, part)
        ordered.setdefault(system.name, system)
    return list(ordered.values())


def fused_run(system: HybridSystem, runs: Sequence[dict], qids: Sequence[str], hits: int) -> tuple[dict, list[float]]:
    """The hybrid's run (cut to ``hits``) and the milliseconds fusing each query took."""
    settings = replace(system.fusion, depth=None, k=hits)
    run, fuse_ms = {}, []
    for qid in qids:
        start = time.perf_counter()
        run[qid] = fuse([{qid: part.get(qid, [])} for part in runs], settings).get(qid, [])
        fuse_ms.append((time.perf_counter() - start) * 1000)
    return run, fuse_ms


def hybrid_stats(parts: Sequence[Any], fuse_ms: list[float]):
    """A :class:`~laconic_pyserini.serving.ServingStats` that sums the parts' (query by query) plus fusion."""
    from .serving import ServingStats

    def total(name: str) -> float:
        return sum(getattr(part, name) for part in parts)

    def per_query(name: str, plus: Sequence[float] = ()) -> list[float]:
        sums = [sum(values) for values in zip(*(getattr(part, name) for part in parts))]
        return [value + extra for value, extra in zip(sums, plus)] if plus else sums

    first = parts[0]
    return ServingStats(
        rss_start_bytes=total("rss_start_bytes"), rss_loaded_bytes=total("rss_loaded_bytes"),
        rss_served_bytes=total("rss_served_bytes"), load_seconds=round(total("load_seconds"), 3),
        queries=first.queries, threads=first.threads, encode_ms=per_query("encode_ms"),
        search_ms=per_query("search_ms", fuse_ms), hits=first.hits, serve_hits=first.serve_hits,
        serve_search_ms=per_query("serve_search_ms", fuse_ms))


def hybrid_row(system: HybridSystem, parts: Sequence[tuple[dict, Any]], qids: Sequence[str], run_path: Path,
               evaluate: Callable[[dict], dict]) -> tuple[dict, Any]:
    """Fuse the parts' runs into ``run_path`` and make the hybrid's report row; ``parts``: (row, stats) each."""
    rows = [row for row, _ in parts]
    hits = parts[0][1].hits
    run, fuse_ms = fused_run(system, [read_trec_run(row["run"]) for row in rows], qids, hits)
    run_path.parent.mkdir(parents=True, exist_ok=True)
    write_trec_run(run, run_path, exact_scores=True)
    stats = hybrid_stats([part_stats for _, part_stats in parts], fuse_ms)
    metrics = evaluate(run)
    encode = [row["encode_docs_per_s"] for row in rows]
    row = {
        "name": system.name, "kind": "hybrid", "index_type": "+".join(row["index_type"] for row in rows),
        "parts": [row["name"] for row in rows], "fusion": system.fusion.to_dict() | {"depth": hits, "k": hits},
        "encoder": None, "metrics": metrics, "index_bytes": sum(row["index_bytes"] for row in rows),
        "serving_rss_bytes": stats.rss_served_bytes, "serving_rss_loaded_bytes": stats.rss_loaded_bytes,
        "process_base_rss_bytes": stats.rss_start_bytes,
        # documents per second of encoding every part in turn: the harmonic sum of the parts' rates
        "encode_docs_per_s": round(1 / sum(1 / e for e in encode), 2) if all(encode) else None,
        "query_latency_ms": stats.latency_summary(), "load_seconds": stats.load_seconds,
        "documents": rows[0]["documents"], "queries": stats.queries, "search_threads": stats.threads,
        "index": [row["index"] for row in rows], "run": str(run_path)}
    return row, stats
