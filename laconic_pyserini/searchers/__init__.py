"""Searchers behind one shape: ``batch_search(queries, k, threads) -> Run``.

:func:`open_searcher` picks the searcher from the index folder's ``manifest.json`` (``kind``), so a user
names an index, not a class. Each searcher module imports its heavy dependencies (the JVM, faiss, Seismic)
only when opened.
"""

from __future__ import annotations

import os
from typing import Protocol

from ..run import Run


class Searcher(Protocol):
    def batch_search(self, queries: dict[str, str], k: int, threads: int = 1) -> Run: ...


def open_searcher(index_dir: str | os.PathLike, *, backend: str | None = None, **options) -> Searcher:
    """Open the searcher that fits the index folder (``backend`` picks among several for one index kind)."""
    from ..index.manifest import IndexFolderError, read_index_manifest

    if str(index_dir).startswith("milvus"):
        from .milvus import MilvusSearcher

        return MilvusSearcher(str(index_dir), **options)
    manifest = read_index_manifest(index_dir)
    kind = manifest.get("kind")
    if kind == "bm25":
        from .bm25 import Bm25Searcher

        return Bm25Searcher(index_dir, **options)
    if kind == "impact":
        if backend in (None, "lucene"):
            from .impact import LaconicSearcher

            return LaconicSearcher(index_dir, **options)
        if backend == "seismic":
            from .seismic import SeismicSearcher

            return SeismicSearcher(index_dir, **options)
        raise IndexFolderError(f"{index_dir}: an impact index is searched with backend lucene or seismic, "
                               f"not {backend!r}")
    if kind == "faiss":
        from .faiss import FaissSearcher

        return FaissSearcher(index_dir, **options)
    raise IndexFolderError(f"{index_dir}: index kind {kind!r} has no searcher in this version "
                           "(rebuild the index with `python -m laconic_pyserini.index`)")
