"""A served index's documents (text for ``doc`` and the page) and, for impact indexes, their stored vectors (for
explanations).

A searcher that has ``doc(docid)`` answers itself; otherwise the document comes from the corpus file the index's
manifest names (``corpus.path`` of impact and faiss indexes, ``source`` of BM25 ones), read once into memory on
first use. Document vectors come from the encoded collection an impact index was built from (``encoded``): the
integer impacts Lucene scored.
"""

from __future__ import annotations

import threading
from typing import Any

from ..data import iter_corpus


class DocumentNotFound(LookupError):
    """The index holds no document with that id."""


class DocumentStore:
    """Documents and document vectors of one index, loaded lazily and once (thread-safe)."""

    def __init__(self, searcher: Any, manifest: dict) -> None:
        self.searcher, self.manifest = searcher, manifest
        self._lock = threading.Lock()
        self._docs: dict[str, dict] | None = None
        self._vectors: dict[str, dict[str, float]] | None = None

    def corpus_source(self) -> str | None:
        corpus = self.manifest.get("corpus")
        if isinstance(corpus, dict) and corpus.get("path"):
            return str(corpus["path"])
        return self.manifest.get("source") or (corpus if isinstance(corpus, str) else None)

    def document(self, docid: str) -> dict:
        """``{"id", "title", "text", "contents"}`` of a document; DocumentNotFound when the index lacks it."""
        own = getattr(self.searcher, "doc", None)
        if callable(own):
            found = own(docid)
            if found is None:
                raise DocumentNotFound(docid)
            return as_document(docid, found)
        return self._corpus_document(docid)

    def _corpus_document(self, docid: str) -> dict:
        with self._lock:
            if self._docs is None:
                source = self.corpus_source()
                if source is None:
                    raise DocumentNotFound(f"{docid} (this index records no corpus to read documents from)")
                self._docs = {doc.id: {"id": doc.id, "title": doc.title, "text": doc.text, "contents": doc.contents}
                              for doc in iter_corpus(source)}
        if docid not in self._docs:
            raise DocumentNotFound(docid)
        return self._docs[docid]

    def vector(self, docid: str) -> dict[str, float]:
        """The document's stored ``{term: impact}`` (an impact index's encoded collection)."""
        with self._lock:
            if self._vectors is None:
                from ..encode.manifest import iter_vectors

                self._vectors = dict(iter_vectors(self.manifest["encoded"]))
        return self._vectors.get(docid, {})


def as_document(docid: str, found: Any) -> dict:
    """A searcher's ``doc`` answer (a dict, a pyserini Document, or raw JSON text) as the service's document."""
    if hasattr(found, "raw") and callable(found.raw):
        found = found.raw()
    if isinstance(found, str):
        import json

        try:
            found = json.loads(found)
        except ValueError:
            return {"id": docid, "title": "", "text": found, "contents": found}
    if isinstance(found, dict):
        title = str(found.get("title") or "")
        text = str(found.get("text") or found.get("contents") or "")
        return {"id": docid, "title": title, "text": text,
                "contents": f"{title} {text}" if title and "contents" not in found else found.get("contents", text)}
    return {"id": docid, "title": "", "text": str(found), "contents": str(found)}
