"""Why a document matched a sparse query: the terms both hold, each with its contribution to the score.

An impact index scores a document by the dot product of the query's and the document's integer impacts, so the
contributions ``query_weight × doc_weight`` of the shared terms sum exactly to the score Lucene returned.
"""

from __future__ import annotations

import re

# Subword markers of the tokenizers in use: GPT-2/Llama byte-level (Ġ), SentencePiece (▁), WordPiece (##).
_MARKERS = re.compile(r"^(?:Ġ|▁|##)")


def explanation(query_vector: dict[str, float], doc_vector: dict[str, float]) -> list[dict]:
    """``[{term, query_weight, doc_weight, contribution}]`` of the shared terms, largest contribution first."""
    shared = [(term, weight, doc_vector[term]) for term, weight in query_vector.items()
              if weight > 0 and term in doc_vector]
    rows = [{"term": term, "query_weight": q, "doc_weight": d, "contribution": q * d} for term, q, d in shared]
    return sorted(rows, key=lambda row: (-row["contribution"], row["term"]))


def surface(term: str) -> str:
    """A vocabulary term as a reader sees it (subword marker removed, lower case)."""
    return _MARKERS.sub("", term).lower()


def query_terms(text: str | None, vector: dict[str, float]) -> list[dict]:
    """The query's own vector, heaviest first: ``[{term, weight, expansion}]``, where ``expansion`` marks a term
    the encoder added (its surface form is not part of any word of the query text)."""
    words = re.findall(r"\w+", (text or "").lower())
    rows = []
    for term, weight in sorted(vector.items(), key=lambda item: (-item[1], item[0])):
        form = surface(term)
        rows.append({"term": term, "weight": weight,
                     "expansion": not form or not any(form in word for word in words)})
    return rows
