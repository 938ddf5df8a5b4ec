"""TREC run files: the one format every searcher writes and the evaluator reads.

A run is ``{query_id: [(doc_id, score), ...]}`` with hits in rank order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .data import DataError, iter_lines

Hits = list[tuple[str, float]]
Run = dict[str, Hits]


def remove_self_hits(query_id: str, hits: Iterable[tuple[str, float]]) -> Hits:
    """BEIR's convention (Anserini's ``-removeQuery``): drop a hit whose doc id equals the query id."""
    return [(doc_id, score) for doc_id, score in hits if doc_id != query_id]


def fetch_depth(hits: int, remove_query: bool) -> int:
    """How many hits to ask a searcher for: one more when a self-hit may be dropped, so ``hits`` remain."""
    return hits + 1 if remove_query else hits


def kept_hits(query_id: str, found: Hits, hits: int, remove_query: bool) -> Hits:
    """What a run keeps of ``found`` (fetched ``fetch_depth`` deep): without the self-hit, cut back to ``hits``."""
    return remove_self_hits(query_id, found)[:hits] if remove_query else found


def write_trec_run(run: Run, path: str | os.PathLike, tag: str = "laconic") -> Path:
    """Write ``qid Q0 docid rank score tag`` lines, atomically (a crash leaves no half-written run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for query_id, hits in run.items():
            for rank, (doc_id, score) in enumerate(hits, start=1):
                f.write(f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n")
    os.replace(tmp, path)
    return path


def read_trec_run(path: str | os.PathLike) -> Run:
    """Read a TREC run; hits keep file order. Malformed lines raise DataError with file:line."""
    run: Run = {}
    for number, line in iter_lines(path):
        cols = line.split()
        if len(cols) != 6:
            raise DataError(path, number, f"expected 6 columns 'qid Q0 docid rank score tag', got {len(cols)}",
                            "write runs in TREC format")
        try:
            score = float(cols[4])
        except ValueError:
            raise DataError(path, number, f"score {cols[4]!r} is not a number") from None
        run.setdefault(cols[0], []).append((cols[2], score))
    return run
