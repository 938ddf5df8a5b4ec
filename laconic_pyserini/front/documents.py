"""A document's text by its id, for ``searcher.doc(docid)`` on every index kind.

Two sources, in this order:

- **Lucene's stored raw document** (BM25 indexes, and impact indexes built with ``store_raw``, the default): the
  JSON line Anserini indexed. It is the index's own copy, so it answers even where the corpus has moved.
- **The corpus the index's manifest names** (``corpus.path``, or a BM25 index's ``source``): faiss folders, Milvus
  collections and impact indexes built without the raw documents. The corpus is read once, on the first lookup,
  and kept in memory (``{id: Document}``).

A document comes back as :class:`laconic_pyserini.data.Document` (``id``, ``title``, ``text``, ``contents``); an id
the index does not hold gives None, as pyserini's ``doc`` does. ``contents`` (title and text joined) is the same
from either source; a stored raw document of a flat index keeps no separate title (``title`` is empty there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..data import Document, corpus_file, iter_corpus
from ..errors import LaconicError
from ..index.manifest import IndexFolderError

#: Index kinds whose Lucene index may hold raw documents (``-storeRaw``).
LUCENE_KINDS = ("bm25", "impact")


class DocumentLookup:
    """``get(docid)`` for one index (its location and manifest); :meth:`close` releases the Lucene reader."""

    def __init__(self, location: str | os.PathLike, manifest: dict) -> None:
        self.location, self.manifest = str(location), manifest
        self._reader = None
        self._corpus: dict[str, Document] | None = None
        self._lucene = manifest.get("kind") in LUCENE_KINDS and manifest.get("store_raw", True) \
            and Path(self.location).is_dir()

    def get(self, docid: str) -> Document | None:
        docid = str(docid)
        if self._lucene:
            found = self._stored(docid)
            if found is not None or self.manifest.get("store_raw") is True:
                return found
        return self.corpus().get(docid)

    def _stored(self, docid: str) -> Document | None:
        from .. import jvm

        utils = jvm.autoclass("io.anserini.index.IndexReaderUtils")
        if self._reader is None:
            self._reader = utils.getReader(self.location)
        raw = utils.documentRaw(self._reader, docid)
        if raw is None:
            return None
        row = json.loads(raw)
        return Document(id=docid, title=str(row.get("title") or ""), text=str(row.get("contents") or ""))

    def corpus(self) -> dict[str, Document]:
        """Every document of the corpus the manifest names, by id (read on first use)."""
        if self._corpus is None:
            self._corpus = {doc.id: doc for doc in iter_corpus(self.corpus_path())}
        return self._corpus

    def corpus_path(self) -> Path:
        corpus = self.manifest.get("corpus")
        source = corpus.get("path") if isinstance(corpus, dict) else self.manifest.get("source")
        if not source:
            raise IndexFolderError(f"{self.location}: its manifest names no corpus, so doc() has no text to give; "
                                   "rebuild the index with this version")
        try:
            return corpus_file(source)
        except LaconicError as exc:
            raise IndexFolderError(f"{self.location}: the corpus its manifest names is not readable ({exc}); put it "
                                   "back to fetch documents") from None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
