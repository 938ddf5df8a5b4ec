"""How the encoder sees its corpus: whether its documents are questions, and a document's text before its prefix.

The reader itself (documents with their ordinal and line number, bad lines as errors so that ``--skip-invalid``
can go on) is :func:`laconic_pyserini.data.read_corpus`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..data import DataError, Document, corpus_file, count_corpus

# BEIR datasets whose documents are questions: LACONIC encodes them with the query prefix.
QUESTION_CORPORA = ("quora", "cqadupstack")


def describe_corpus(source: str | os.PathLike) -> dict:
    """What a manifest records about its corpus: how it was named, the file read, its size and line count."""
    path = corpus_file(source)
    return {"source": str(source), "path": str(path.resolve()), "bytes": path.stat().st_size,
            "lines": count_corpus(source)}


def _names_question_corpus(name: str) -> bool:
    name = name.strip("/").lower().removeprefix("beir/")
    return re.split(r"[/_-]", name, maxsplit=1)[0] in QUESTION_CORPORA


def is_question_corpus(source: str | os.PathLike) -> bool:
    """Whether ``source`` is the *name* of BEIR Quora or CQADupStack (``quora``, ``beir/cqadupstack/android``,
    ``cqadupstack-android``), whose documents take the query prefix.

    Only a dataset name decides: an existing folder or file is a path, and the folders above it say nothing
    about its documents (a SciFact copy under ``~/quora-experiments/`` is SciFact). See :func:`resolve_docs_as_queries`.
    """
    if Path(source).exists():
        return False
    return _names_question_corpus(str(source))


def resolve_docs_as_queries(source: str | os.PathLike, explicit: bool | None = None) -> bool:
    """Whether the documents of ``source`` take the query prefix: ``explicit`` when given (``--docs-as-queries`` /
    ``--no-docs-as-queries``, a recipe's ``docs_as_queries``), else :func:`is_question_corpus` of the name.

    A folder *named* like a question corpus (``…/quora``) is refused without ``explicit``: guessing either way from
    a path would silently encode it with the wrong prefix.
    """
    if explicit is not None:
        return bool(explicit)
    path = Path(source)
    if path.exists():
        folder = path if path.is_dir() else path.parent
        if _names_question_corpus(folder.name):
            raise DataError(path, None, f"the folder is named like BEIR {folder.name!r}, whose documents are "
                            "questions, but a path does not say so", "pass --docs-as-queries (query prefix, as "
                            "BEIR Quora and CQADupStack) or --no-docs-as-queries, or give the dataset by name")
        return False
    return _names_question_corpus(str(source))


def document_text(doc: Document, fields: tuple[str, ...]) -> str:
    """The text the encoder sees, before its prefix: ``title text`` (title omitted when empty) by default."""
    if tuple(fields) == ("title", "text"):
        return doc.contents
    return " ".join(value for value in (getattr(doc, name) for name in fields) if value)
