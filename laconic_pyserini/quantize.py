"""Float term weights → Anserini integer impacts: one rule, for documents and queries alike.

An impact is ``rint(weight * scale)`` (round half to even, as numpy's ``rint``); terms whose impact is ≤ 0 are
dropped, because Anserini's impact postings cannot hold them and a zero would only waste a posting.
"""

from __future__ import annotations

import math


def quantize(vector: dict[str, float], scale: float = 100.0) -> dict[str, int]:
    """``{term: rint(weight * scale)}`` without the terms whose impact is ≤ 0.

    A NaN or infinite weight raises ValueError: it means the model diverged, and writing it would corrupt an index.
    """
    impacts = {}
    for term, weight in vector.items():
        scaled = float(weight) * scale
        if not math.isfinite(scaled):
            raise ValueError(f"term {term!r} has weight {weight!r}; a NaN or infinite weight cannot be an impact")
        # Python's round() of a float is round-half-to-even, the same rule as numpy.rint.
        impact = round(scaled)
        if impact > 0:
            impacts[term] = impact
    return impacts
