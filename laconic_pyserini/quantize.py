"""Float term weights → Anserini integer impacts: one rule, for documents and queries, dicts and tensors alike.

An impact is ``rint(weight * scale)`` (round half to even, as numpy's ``rint``); terms whose impact is ≤ 0 are
dropped, because Anserini's impact postings cannot hold them and a zero would only waste a posting. Query texts
become impacts through :func:`query_impacts`, whichever caller (the query-file writer, the searchers) asks.

Integer impacts are the Lucene contract. Backends that score floats (Seismic, Milvus) may take the encoder's own
weights instead, for queries (``query_vectors(..., weights="float")``, the LACONIC authors' ``use_float_weights=True``)
and for documents (``encode --weights float``: the collection stores the floats and a Lucene impact index quantises
them on the way in, with :func:`quantize`): positive weights kept as they are. Both kinds come from this one place,
:func:`weigh`.
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


def quantize_tensor(weights, scale: float = 100.0):
    """:func:`quantize` of a B×V torch tensor: ``rint(w · scale)`` in float64 (exact for any impact), ≤ 0 as 0.

    Torch's ``round`` is round-half-to-even too. A NaN or infinite weight raises ValueError, as for dicts.
    """
    scaled = weights.double() * scale
    if not bool(scaled.isfinite().all()):
        raise ValueError("a NaN or infinite weight cannot be an impact")
    return scaled.round().clamp_min(0)


#: What a vector (query or document) may hold: ``impact`` (integers, ``rint(w * scale)``) or ``float`` (the
#: encoder's positive weights).
WEIGHTS = ("impact", "float")
QUERY_WEIGHTS = WEIGHTS


def positive_weights(vector: dict[str, float]) -> dict[str, float]:
    """The float counterpart of :func:`quantize`: positive, finite weights as floats; a NaN or inf raises."""
    kept = {}
    for term, weight in vector.items():
        weight = float(weight)
        if not math.isfinite(weight):
            raise ValueError(f"term {term!r} has weight {weight!r}; a NaN or infinite weight cannot be searched")
        if weight > 0:
            kept[term] = weight
    return kept


def weigh(vector: dict[str, float], scale: float, weights: str) -> dict:
    """``vector`` as ``weights`` says: :func:`quantize` (``impact``) or :func:`positive_weights` (``float``)."""
    if weights == "impact":
        return quantize(vector, scale)
    if weights == "float":
        return positive_weights(vector)
    raise ValueError(f"weights must be one of {WEIGHTS}, not {weights!r}")


def query_vectors(encoder, texts: list[str], *, batch_size: int = 32, weights: str = "impact") -> list[dict]:
    """Query texts as vectors: ``encoder.encode_queries`` (which adds the spec's query prefix) in batches of
    ``batch_size``; ``weights="impact"`` quantises each with ``spec.quant_scale``, ``"float"`` keeps the weights."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    if weights not in WEIGHTS:
        raise ValueError(f"query weights must be one of {WEIGHTS}, not {weights!r}")
    vectors = []
    for start in range(0, len(texts), batch_size):
        for vector in encoder.encode_queries(texts[start:start + batch_size]):
            vectors.append(weigh(vector, encoder.spec.quant_scale, weights))
    return vectors


def query_impacts(encoder, texts: list[str], *, batch_size: int = 32) -> list[dict[str, int]]:
    """The impacts of query texts (:func:`query_vectors` with ``weights="impact"``)."""
    return query_vectors(encoder, texts, batch_size=batch_size, weights="impact")
