"""A LACONIC query encoder for stock pyserini: ``LaconicQueryEncoder``, a ``pyserini.encode.QueryEncoder``.

::

    from laconic_pyserini.integrations.pyserini import LaconicQueryEncoder   # starts this toolkit's JVM
    from pyserini.search.lucene import LuceneImpactSearcher

    searcher = LuceneImpactSearcher("indexes/scifact.splade-tiny", LaconicQueryEncoder("splade-tiny"))
    hits = searcher.search("does aspirin prevent heart attacks?", k=10)

``encode(text)`` gives the query's integer impacts (``rint(w * 100)``, the spec's scale), the vector an impact
index scores, from any encoder :func:`laconic_pyserini.load_encoder` takes (spec name, hub id, model folder, GGUF)
with the same inference settings (``quantize``, ``dtype``, ``device``).

Where pyserini's searcher differs by design: ``LuceneImpactSearcher`` keeps a query term only if its idf
``log(N / df)`` exceeds ``min_idf`` (0 by default), so a term found in *every* document leaves the query and the
scores drop by its share; this toolkit's searcher keeps it. ``LuceneImpactSearcher(…, min_idf=-1)`` keeps every
term and gives this toolkit's hits and scores exactly.

pyserini must not start its own JVM (its options fail on the JDK this toolkit runs Anserini on), so the class is
made on first access (PEP 562): :func:`laconic_pyserini.jvm.start` runs, then ``pyserini.encode`` is imported.
Importing this module alone does neither.
"""

from __future__ import annotations

import os

_CLASS = None


def _make_class():
    from .. import jvm

    jvm.start()
    from pyserini.encode import QueryEncoder

    from ..front.encoder import Encoder, load_encoder

    class LaconicQueryEncoder(QueryEncoder):
        """Query texts -> ``{term: impact}`` with a LACONIC (or SPLADE) encoder of this toolkit.

        ``encoder``: a spec name, hub id, model folder or GGUF file, or an :class:`~laconic_pyserini.Encoder`
        already loaded; ``settings``: :func:`~laconic_pyserini.load_encoder`'s (``quantize="int8"``,
        ``dtype="bf16"``, ``device``, ``max_length`` ...).
        """

        def __init__(self, encoder: str | os.PathLike | Encoder = "laconic-1b", **settings) -> None:
            super().__init__()
            self.encoder = encoder if isinstance(encoder, Encoder) else load_encoder(encoder, **settings)
            if not self.encoder.sparse:
                raise ValueError(f"{self.encoder.spec.name} is a dense encoder; LuceneImpactSearcher needs a sparse "
                                 "one (a dense index is searched with open_searcher)")
            self.has_model = True

        def encode(self, text: str, **kwargs) -> dict[str, int]:
            return self.encoder.encode_query(text, impacts=True)

    return LaconicQueryEncoder


def __getattr__(name: str):
    global _CLASS
    if name == "LaconicQueryEncoder":
        if _CLASS is None:
            _CLASS = _make_class()
        return _CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
