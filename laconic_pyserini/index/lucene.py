"""Lucene indexes through Anserini's ``IndexCollection``, run in this process's JVM; BM25 indexes of BEIR corpora.

``flat`` joins title and text into ``contents`` (Anserini's BeirFlatCollection); ``multifield`` keeps ``title`` as
its own field (BeirMultifieldCollection) and searches ``contents`` and ``title`` with weight 1 each. Impact indexes
of encoded collections are :mod:`laconic_pyserini.index.impact`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..data import corpus_file, iter_corpus, require_documents
from ..outputs import TMP_PREFIX, building, locked
from .manifest import IndexFolderError, claim_index, finish_build, write_index_manifest

logger = logging.getLogger(__name__)

FIELDS = ("flat", "multifield")
#: Inside the index folder: what Anserini, Lucene and the JVM wrote while it was built (the console gets only
#: the warnings that matter, once, and a bar on Anserini's own document counter).
LOG_FILE = Path("logs") / "index.log"
#: Anserini's counter: ``… of files completed, 1,234 documents indexed`` (about once a minute), and at the end
#: ``Indexing Complete! 5,183 documents indexed``.
_COUNTER = re.compile(r"([\d,]+) documents indexed")


def run_index_collection(args: Sequence[str]) -> None:
    """Run Anserini's ``IndexCollection`` with these arguments in this process's JVM."""
    from .. import jvm

    logger.info("IndexCollection %s", " ".join(args))
    jvm.autoclass("io.anserini.index.IndexCollection").main(list(args))


def index_collection(args: Sequence[str], partial: Path, index_dir: Path, *, documents: int, desc: str) -> int:
    """Run ``IndexCollection`` into ``partial`` with its output in ``partial/logs/index.log`` (``index_dir``'s
    once swapped in) and a progress bar on Anserini's counter; returns the documents the built index holds.

    Inside an outer capture (``compare``'s log) the output joins that log instead.
    """
    from ..console import captured, counter_bar

    with captured(partial / LOG_FILE, shown_as=index_dir / LOG_FILE) as log, \
            counter_bar(log, _COUNTER, total=documents, desc=desc):
        run_index_collection(args)
        return lucene_document_count(partial)


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
        indexed = index_collection(args, partial, index_dir, documents=count, desc=f"index {index_dir.name} (BM25)")
    if indexed != count:
        raise IndexFolderError(f"{partial}: Anserini indexed {indexed} documents but the corpus has {count}; "
                               "Anserini's warnings above name the skipped documents")
    write_index_manifest(partial, {"kind": "bm25", "fields": fields, "source": str(source), "documents": count})
    return finish_build(partial, index_dir, "bm25")
