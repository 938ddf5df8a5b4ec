"""This toolkit's encoders inside other libraries' APIs: sentence-transformers' ``SparseEncoder`` and pyserini.

- :mod:`.sentence_transformers`: ``LaconicTransformer`` + ``LaconicPooling``, the modules a LACONIC-style decoder
  runs as in ``SparseEncoder`` (our loading, tokenisation and sparse head, called, never copied);
- :mod:`.st_export`: writes a folder ``SparseEncoder`` opens (``python -m laconic_pyserini.export``);
- :mod:`.st_load`: :func:`open_sparse_encoder` opens such a folder as a ``sentence_transformers.SparseEncoder``
  with no argument (sentence-transformers 6's own ``SparseEncoder(folder)`` asks for its remote-code flag
  before it imports a class outside its namespace; why, and why there is no other way: that module's doc);
- :mod:`.pyserini`: ``LaconicQueryEncoder``, a ``pyserini.encode.QueryEncoder`` for stock pyserini's
  ``LuceneImpactSearcher`` (imported from its own module: it starts this toolkit's JVM first).

The other direction (an ``--encoder`` that is a SparseEncoder folder) is :mod:`laconic_pyserini.st_folder`, which
reads JSON only. Importing this package imports neither torch nor sentence-transformers; the names below load on
first use.
"""

from __future__ import annotations

_EXPORTS = {
    "LaconicTransformer": "sentence_transformers",
    "LaconicPooling": "sentence_transformers",
    "export_sentence_transformers": "st_export",
    "open_sparse_encoder": "st_load",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
