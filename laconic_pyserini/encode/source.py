"""How the encoder sees its corpus: which corpora are questions, and the text of a document before its prefix.

The reader itself (documents with their ordinal and line number, bad lines as errors so that ``--skip-invalid``
can go on) is :func:`laconic_pyserini.data.read_corpus`; the names below are kept for the encode modules.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data import CorpusLine as Line  # noqa: F401  (re-exported)
from ..data import Document, corpus_file, read_corpus  # noqa: F401  (read_corpus re-exported)
from ..data import count_corpus as count_lines

# BEIR datasets whose documents are questions: LACONIC encodes them with the query prefix.
_QUESTION_CORPORA = ("quora", "cqadupstack")


def describe_corpus(source: str | os.PathLike) -> dict:
    """What a manifest records about its corpus: how it was named, the file read, its size and line count."""
    path = corpus_file(source)
    return {"source": str(source), "path": str(path.resolve()), "bytes": path.stat().st_size,
            "lines": count_lines(source)}


def is_question_corpus(source: str | os.PathLike) -> bool:
    """BEIR Quora and CQADupStack, from the dataset name or its folder (their documents take the query prefix)."""
    candidates = [str(source), str(corpus_file(source).resolve().parent)]
    for candidate in candidates:
        for part in Path(candidate.lower()).parts:
            for name in _QUESTION_CORPORA:
                if part == name or part.startswith(name + "-") or part.startswith(name + "_"):
                    return True
    return False


def document_text(doc: Document, fields: tuple[str, ...]) -> str:
    """The text the encoder sees, before its prefix: ``title text`` (title omitted when empty) by default."""
    if tuple(fields) == ("title", "text"):
        return doc.contents
    return " ".join(value for value in (getattr(doc, name) for name in fields) if value)
