"""TREC run files: the one format every searcher writes and the evaluator reads.

A run is ``{query_id: [(doc_id, score), ...]}`` with hits in rank order.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable
from pathlib import Path

from .data import DataError, iter_lines
from .errors import UsageError
from .outputs import atomic_open, claim_file

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


def check_k(k, threads: int = 1) -> None:
    """Refuse a ``k`` (hits per query) or ``threads`` that is not a positive integer (``k=-1`` or ``k=1.5`` would
    otherwise return some number of hits without a word)."""
    for name, value in (("k", k), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise UsageError(f"{name} must be a positive integer, not {value!r}")


def looks_like_run(path: Path) -> bool:
    """A file whose first line is a TREC run line: an earlier run, ours to overwrite."""
    try:
        with open(path, encoding="utf-8") as f:
            cols = f.readline().split()
    except (OSError, UnicodeDecodeError):
        return False
    return len(cols) == 6 and cols[1] == "Q0"


def claim_run_file(path: str | os.PathLike, *, flag: str = "--output") -> None:
    """Refuse a run output that is a folder or a file that is not a TREC run (checked before any search)."""
    claim_file(path, flag=flag, ours=looks_like_run)


def write_trec_run(run: Run, path: str | os.PathLike, tag: str = "laconic", *, exact_scores: bool = False) -> Path:
    """Write ``qid Q0 docid rank score tag`` lines, atomically (a crash leaves no half-written run).

    Scores are written with 6 decimals, or with ``exact_scores`` as the shortest text that reads back as the same
    float (Python's ``repr``; fused scores such as RRF's differ below 6 decimals).
    An existing file is replaced only when it is a TREC run (:func:`claim_run_file`).
    """
    path = Path(path)
    claim_run_file(path)
    with atomic_open(path) as f:
        for query_id, hits in run.items():
            for rank, (doc_id, score) in enumerate(hits, start=1):
                text = repr(float(score)) if exact_scores else f"{score:.6f}"
                f.write(f"{query_id} Q0 {doc_id} {rank} {text} {tag}\n")
    return path


def read_trec_run(path: str | os.PathLike, *, ranks_in_order: bool = False) -> Run:
    """Read a TREC run; hits keep file order. Malformed lines and repeated (query, doc) pairs raise DataError.

    ``ranks_in_order``: each query's rank column must read 1, 2, 3, … in file order (a reader that takes a hit's
    rank from its position, such as fusion, then agrees with one that reads the column).
    """
    run: Run = {}
    first_line: dict[tuple[str, str], int] = {}
    for number, line in iter_lines(path):
        cols = line.split()
        if len(cols) != 6:
            raise DataError(path, number, f"expected 6 columns 'qid Q0 docid rank score tag', got {len(cols)}",
                            "write runs in TREC format")
        try:
            score = float(cols[4])
        except ValueError:
            raise DataError(path, number, f"score {cols[4]!r} is not a number") from None
        if not math.isfinite(score):  # a NaN ranks nowhere: trec_eval's order would be arbitrary
            raise DataError(path, number, f"score {cols[4]!r} is not a finite number", "rewrite the run")
        seen = first_line.setdefault((cols[0], cols[2]), number)
        if seen != number:
            # trec_eval refuses such a run; keeping either row would silently change the metric.
            raise DataError(path, number, f"document {cols[2]!r} is listed twice for query {cols[0]!r} "
                            f"(first on line {seen})", "a run ranks each document at most once per query")
        hits = run.setdefault(cols[0], [])
        if ranks_in_order and cols[3] != str(len(hits) + 1):
            raise DataError(path, number, f"rank {cols[3]!r} of query {cols[0]!r} is not {len(hits) + 1}, its "
                            "position in the file", "sort the run by score and renumber its ranks from 1")
        hits.append((cols[2], score))
    return run
