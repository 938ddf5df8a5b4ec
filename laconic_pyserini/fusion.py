"""Run fusion, numerically as pyserini 1.6's ``python -m pyserini.fusion`` computes it.

Every method rescores each run, then sums a document's scores over the runs and ranks the sums:

- ``rrf``: a hit's score becomes ``1 / (rrf_k + rank)`` (Cormack et al., 2009; ``rrf_k`` = 60);
- ``interpolation``: exactly two runs, ``alpha * first + (1 - alpha) * second`` on the scores *as they are* (no
  normalisation: pyserini's fusion CLI interpolates raw scores, unlike its ``HybridSearcher``);
- ``average``: every score times ``1 / len(runs)``, then summed (not the sum divided afterwards);
- ``normalize``: min-max per query over the *whole* run (before ``depth`` cuts it), ``1.0`` where all scores of a
  query are equal.

The arithmetic follows pyserini's step by step so that the floats are the same to the last bit: ``depth`` keeps a
run's first ``depth`` hits of each query in run order; a document missing from a run adds nothing (a document
found by one run only keeps its one share); the sum is Kahan-compensated and taken in run order (pandas' grouped
sum); hits are ranked by score descending, then document id ascending (code-point order); ``k`` cuts each query's
list; queries come out in numeric order when every query id is an integer, else in string order. pyserini writes
a query id it read as an integer back as that integer (``007`` becomes ``7``); this module keeps ids as given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from .errors import UsageError
from .run import Run

#: The methods of ``python -m pyserini.fusion --method``.
METHODS = ("rrf", "interpolation", "average", "normalize")
#: pyserini's defaults: ``--rrf.k 60``, ``--alpha 0.5``, ``--depth 1000``, ``--k 1000``.
DEFAULT_RRF_K = 60
DEFAULT_ALPHA = 0.5
DEFAULT_DEPTH = 1000
DEFAULT_K = 1000


@dataclass(frozen=True)
class FusionSettings:
    """How runs are fused: the method and its parameters, pyserini's CLI defaults.

    ``depth``: hits of each run considered per query (``None``: all); ``k``: hits kept per fused query
    (``None``: every document any run found).
    """

    method: str = "rrf"
    rrf_k: int = DEFAULT_RRF_K
    alpha: float = DEFAULT_ALPHA
    depth: int | None = DEFAULT_DEPTH
    k: int | None = DEFAULT_K

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"fusion method {self.method!r}: choose one of {', '.join(METHODS)}")
        for name in ("depth", "k"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"fusion {name} {value}: must be at least 1 (or None for all)")

    def to_dict(self) -> dict:
        return asdict(self)


def rescore_rrf(run: Run, rrf_k: int = DEFAULT_RRF_K) -> Run:
    """Each hit's score becomes ``1 / (rrf_k + rank)``, ranks counted from 1 in run order."""
    return {qid: [(doc, 1 / (rrf_k + rank)) for rank, (doc, _) in enumerate(hits, start=1)]
            for qid, hits in run.items()}


def rescore_scale(run: Run, scale: float) -> Run:
    return {qid: [(doc, score * scale) for doc, score in hits] for qid, hits in run.items()}


def rescore_normalize(run: Run) -> Run:
    """Min-max normalise each query's scores to [0, 1]; a query whose scores are all equal gets 1.0 for each."""
    normalized: Run = {}
    for qid, hits in run.items():
        if not hits:
            normalized[qid] = []
            continue
        low = min(score for _, score in hits)
        high = max(score for _, score in hits)
        span = high - low
        normalized[qid] = [(doc, 1.0 if span == 0 else (score - low) / span) for doc, score in hits]
    return normalized


def merge_sum(runs: Sequence[Run], depth: int | None = None, k: int | None = None) -> Run:
    """Sum each document's scores over ``runs`` (their first ``depth`` hits per query) and rank the sums."""
    if len(runs) < 2:
        raise UsageError(f"fusion needs at least 2 runs, got {len(runs)}")
    totals: dict[str, dict[str, list[float]]] = {}  # qid -> doc -> [sum, compensation]
    for run in runs:
        for qid, hits in run.items():
            sums = totals.setdefault(qid, {})
            for doc, score in hits if depth is None else hits[:depth]:
                acc = sums.setdefault(doc, [0.0, 0.0])
                y = score - acc[1]
                t = acc[0] + y
                acc[1] = (t - acc[0]) - y
                acc[0] = t
    fused: Run = {}
    for qid in sorted(totals, key=query_order(totals)):
        ranked = sorted(((doc, acc[0]) for doc, acc in totals[qid].items()), key=lambda hit: (-hit[1], hit[0]))
        fused[qid] = ranked if k is None else ranked[:k]
    return fused


_INTEGER = re.compile(r"[+-]?[0-9]+")


def query_order(qids) -> Callable[[str], object]:
    """The sort key pyserini's output order follows: numeric when every id reads as an integer, else the id."""
    if all(_INTEGER.fullmatch(qid) for qid in qids):
        return int
    return str


def rrf(runs: Sequence[Run], rrf_k: int = DEFAULT_RRF_K, depth: int | None = None, k: int | None = None) -> Run:
    """Reciprocal rank fusion (pyserini's ``reciprocal_rank_fusion``)."""
    return merge_sum([rescore_rrf(run, rrf_k) for run in runs], depth, k)


def interpolation(runs: Sequence[Run], alpha: float = DEFAULT_ALPHA, depth: int | None = None,
                  k: int | None = None) -> Run:
    """``alpha`` times the first run's scores plus ``1 - alpha`` times the second's (exactly two runs)."""
    if len(runs) != 2:
        raise UsageError(f"interpolation fuses exactly 2 runs, got {len(runs)}; use rrf or average for more")
    return merge_sum([rescore_scale(runs[0], alpha), rescore_scale(runs[1], 1 - alpha)], depth, k)


def average(runs: Sequence[Run], depth: int | None = None, k: int | None = None) -> Run:
    """Every run's scores times ``1 / len(runs)``, summed."""
    return merge_sum([rescore_scale(run, 1 / len(runs)) for run in runs], depth, k)


def normalize(runs: Sequence[Run], depth: int | None = None, k: int | None = None) -> Run:
    """Min-max normalised scores (each run, each query), summed."""
    return merge_sum([rescore_normalize(run) for run in runs], depth, k)


def fuse(runs: Sequence[Run], settings: FusionSettings = FusionSettings()) -> Run:
    """Fuse ``runs`` as ``settings`` say."""
    depth, k = settings.depth, settings.k
    if settings.method == "rrf":
        return rrf(runs, settings.rrf_k, depth, k)
    if settings.method == "interpolation":
        return interpolation(runs, settings.alpha, depth, k)
    if settings.method == "average":
        return average(runs, depth, k)
    return normalize(runs, depth, k)
