"""Lucene indexes through Anserini's ``IndexCollection``, run in this process's JVM; BM25 indexes of BEIR corpora.

``flat`` joins title and text into ``contents`` (Anserini's BeirFlatCollection); ``multifield`` keeps ``title`` as
its own field (BeirMultifieldCollection) and searches ``contents`` and ``title`` with weight 1 each. Impact indexes
of encoded collections are :mod:`laconic_pyserini.index.impact`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..data import corpus_file, iter_corpus, require_documents
from ..outputs import TMP_PREFIX, building, locked
from .manifest import IndexFolderError, claim_index, finish_build, write_index_manifest

logger = logging.getLogger(__name__)

FIELDS = ("flat", "multifield")


def run_index_collection(args: Sequence[str]) -> None:
    """Run Anserini's ``IndexCollection`` with these arguments in this process's JVM."""
    from .. import jvm

    logger.info("IndexCollection %s", " ".join(args))
    jvm.autoclass("io.anserini.index.IndexCollection").main(list(args))


def lucene_document_count(index_dir: str | os.PathLike) -> int:
    """Number of documents in a Lucene index (Anserini's own reader)."""
    from .. import jvm

    jvm.start()
    from pyserini.index.lucene import LuceneIndexReader

    return int(LuceneIndexReader(str(index_dir)).stats()["documents"])


def build_bm25_index(source: str | os.PathLike, index_dir: str | os.PathLike, *, fields: str = "flat",
                     threads: int = 2) -> Path:
    """Index a BEIR corpus for BM25 with Anserini's default English analyzer (Porter stemming, stopwords)."""
    if fields not in FIELDS:
        raise ValueError(f"fields must be one of {FIELDS}, not {fields!r}")
    index_dir = Path(index_dir)
    claim_index(index_dir, "bm25", [corpus_file(source)])
    with locked(index_dir), building(index_dir) as partial:
        return _build_bm25(source, partial, index_dir, fields, threads)


def _build_bm25(source, partial: Path, index_dir: Path, fields: str, threads: int) -> Path:
    count = 0
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX + "bm25-", dir=index_dir.parent) as tmp:
        collection = Path(tmp) / "docs.jsonl"
        with open(collection, "w", encoding="utf-8") as f:
            for doc in iter_corpus(source):
                if fields == "flat":
                    row = {"id": doc.id, "contents": doc.contents}
                else:
                    row = {"id": doc.id, "contents": doc.text, "title": doc.title}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        if count == 0:
            require_documents(source)
        args = ["-collection", "JsonCollection", "-input", tmp, "-index", str(partial),
                "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads),
                "-storePositions", "-storeDocvectors", "-storeRaw"]
        if fields == "multifield":
            args += ["-fields", "title"]
        run_index_collection(args)
    indexed = lucene_document_count(partial)
    if indexed != count:
        raise IndexFolderError(f"{partial}: Anserini indexed {indexed} documents but the corpus has {count}; "
                               "see the IndexCollection log above for skipped documents")
    write_index_manifest(partial, {"kind": "bm25", "fields": fields, "source": str(source), "documents": count})
    return finish_build(partial, index_dir, "bm25")
