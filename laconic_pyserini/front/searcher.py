"""pyserini's searcher idiom over every backend: ``open_searcher(location)`` gives an :class:`IndexSearcher`.

::

    with open_searcher("indexes/scifact.splade-tiny") as searcher:
        hits = searcher.search("does aspirin prevent heart attacks?")        # k=10
        for i, hit in enumerate(hits):
            print(f"{i + 1:2} {hit.docid:10} {hit.score:.5f}")
        searcher.doc(hits[0].docid).contents
        results = searcher.batch_search(["query one", "query two"], ["q1", "q2"], k=10, threads=2)

How a backend plugs in: it implements the internal protocol of :mod:`laconic_pyserini.searchers`
(``batch_search(queries: dict, k, threads) -> Run``, ``encode_query``, ``search_encoded``, ``encodes_queries``;
``close()`` if it holds anything) and registers there; :func:`open_searcher` wraps whatever the registry opens, so
``search``, pyserini's ``batch_search``, ``doc``, ``close`` and ``with`` come for free. ``doc`` reads the index's
documents (:mod:`.documents`) unless the backend has a ``doc(docid)`` of its own. Everything else a backend offers
(``manifest``, ``spec``, ``batch_search_vectors`` ...) is reachable on the wrapper as on the backend itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ..data import Document
from ..errors import UsageError
from ..index.manifest import read_index_manifest
from ..searchers import Searcher, open_searcher as open_backend
from .documents import DocumentLookup

#: Hits per query when ``k`` is not given, for every index kind (pyserini's default).
DEFAULT_K = 10


class Hit(NamedTuple):
    """One ranked document: ``hit.docid``, ``hit.score``, and ``docid, score = hit`` as before."""

    docid: str
    score: float


class IndexSearcher:
    """A searcher over one index location, in pyserini's idiom; ``backend`` is the internal searcher it wraps."""

    def __init__(self, backend: Searcher, location: str | os.PathLike | Sequence[str | os.PathLike]) -> None:
        self.backend = backend
        # A fused searcher's parts: doc() asks each index in turn.
        self.location = str(location) if isinstance(location, (str, os.PathLike)) else [str(x) for x in location]
        self._documents: list[DocumentLookup] | None = None

    # ------------------------------------------------------------------------------------------ pyserini's idiom

    def search(self, query: str | dict, k: int = DEFAULT_K) -> list[Hit]:
        """The top ``k`` hits of one query (a text, or a ``{term: impact}`` vector where the backend takes them)."""
        return self.batch_search({"q": query}, k=k)["q"]

    def batch_search(self, queries: Sequence[str] | Mapping[str, Any], qids: Sequence[str] | None = None,
                     k: int = DEFAULT_K, threads: int = 1) -> dict[str, list[Hit]]:
        """``{qid: [hits]}`` for ``queries`` with ids ``qids`` (pyserini's signature), or for a ``{qid: query}``
        mapping given alone; ``threads`` search in parallel where the backend can."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UsageError(f"k={k!r}: the number of hits must be a positive integer")
        if qids is None:
            if not isinstance(queries, Mapping):
                raise UsageError("batch_search(queries, qids): give the query ids, or pass a {qid: query} dict")
            asked = dict(queries)
        else:
            if isinstance(queries, (str, Mapping)) or isinstance(qids, str) or len(queries) != len(qids):
                raise UsageError("batch_search(queries, qids): two lists of the same length, one id per query")
            asked = dict(zip(map(str, qids), queries))
            if len(asked) != len(qids):
                raise UsageError("batch_search(queries, qids): each query id must be given once")
        run = self.backend.batch_search(asked, k, threads)
        return {qid: [Hit(str(docid), float(score)) for docid, score in run.get(qid, [])] for qid in asked}

    def doc(self, docid: str) -> Document | None:
        """The document ``docid`` (``.id``, ``.title``, ``.text``, ``.contents``), or None if the index lacks it."""
        own = getattr(self.backend, "doc", None)
        if own is not None:
            return own(docid)
        if self._documents is None:
            manifest = getattr(self.backend, "manifest", None)
            if isinstance(self.location, list):
                self._documents = [DocumentLookup(part, read_index_manifest(part)) for part in self.location]
            else:
                self._documents = [DocumentLookup(self.location, manifest if isinstance(manifest, dict)
                                                  else read_index_manifest(self.location))]
        return next((found for lookup in self._documents if (found := lookup.get(docid)) is not None), None)

    def close(self) -> None:
        """Release the index (Java readers, clients); the searcher is not usable afterwards."""
        for lookup in self._documents or []:
            lookup.close()
        self._documents = None
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> IndexSearcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ the internal protocol

    @property
    def encodes_queries(self) -> bool:
        return self.backend.encodes_queries

    def encode_query(self, text: str) -> Any:
        return self.backend.encode_query(text)

    def search_encoded(self, encoded: Any, k: int = DEFAULT_K) -> list[Hit]:
        return [Hit(str(docid), float(score)) for docid, score in self.backend.search_encoded(encoded, k)]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "backend":
            raise AttributeError(name)
        return getattr(self.backend, name)

    def __repr__(self) -> str:
        return f"IndexSearcher({self.location!r}, backend={type(self.backend).__name__})"


def open_searcher(location: str | os.PathLike | Sequence[str | os.PathLike], *, backend: str | None = None,
                  **options) -> IndexSearcher:
    """Open the index at ``location`` (a folder this toolkit built, or ``milvus://…``) with its default backend, or
    ``backend`` (``seismic`` for an impact index); ``options`` are the backend's (``encoder``, ``quantize``,
    ``query_cut`` ...), the search CLI's flags as keywords. Several locations open one fused searcher
    (``fusion=FusionSettings(...)``, default RRF; docs/fusion.md)."""
    return IndexSearcher(open_backend(location, backend=backend, **options), location)
