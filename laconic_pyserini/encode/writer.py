"""Anserini JsonVectorCollection lines and atomically committed part files.

A part is written to a temporary name (:mod:`laconic_pyserini.outputs`), fsynced and renamed; only then does the
manifest list it. A ``kill -9`` therefore leaves either a committed part (listed, with its sha256), a renamed part
the manifest does not list yet (the rerun writes it again, byte for byte), or temporary debris that the next run
deletes: nothing half-written is ever read as output, and nothing but the toolkit's own temporary names is removed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..outputs import write_bytes_atomic
from .manifest import EMPTY_TERM, EncodeError, PartInfo


def check_terms(vector: dict[str, float], what: str) -> None:
    """Refuse terms that a whitespace tokenizer would split or lose.

    Anserini indexes ``-pretokenized`` vectors through a whitespace analyzer (a term ``"foo bar"`` becomes two
    terms, ``foo`` and ``bar``), and pyserini's pre-encoded query TSV is split with ``str.split()``. Python's
    ``isspace`` covers every character Java's ``Character.isWhitespace`` does, so this guard is strict enough
    for both. Vocabulary strings of BERT wordpieces and of byte-level BPE (``Ġheart``) never trip it.
    """
    for term in vector:
        if not term or any(ch.isspace() for ch in term):
            raise EncodeError(f"{what}: term {term!r} is empty or contains whitespace, which Anserini's "
                              "pretokenized indexing and pyserini's query TSV would split; this tokenizer's "
                              "vocabulary cannot be written as whitespace-separated terms")
        if term == EMPTY_TERM:
            raise EncodeError(f"{what}: the model produced the reserved term {EMPTY_TERM!r}, which marks empty "
                              "vectors in the output; this vocabulary cannot be used with this writer")


def vector_line(doc_id: str, contents: str, weights: dict[str, float]) -> str:
    """One JsonVectorCollection line of integer impacts or float weights (``encode --weights float``; JSON keeps a
    float's shortest round-trip digits, so reading it back gives the very float); an empty vector gets
    :data:`EMPTY_TERM` (weight 1 either way) so Lucene keeps the document."""
    check_terms(weights, f"document {doc_id!r}")
    vector = weights if weights else {EMPTY_TERM: 1}
    return json.dumps({"id": doc_id, "contents": contents, "vector": vector}, ensure_ascii=False) + "\n"


def part_name(index: int) -> str:
    return f"part-{index:05d}.jsonl"


def commit_part(root: Path, folder: str, index: int, lines: list[str], *, start: int, end: int,
                empty_documents: int, empty_vectors: int, invalid: list[dict], invalid_lines: int,
                terms: int) -> PartInfo:
    """Write ``root/folder/part-index.jsonl`` atomically and describe it."""
    directory = root / folder
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / part_name(index)
    data = "".join(lines).encode("utf-8")
    write_bytes_atomic(final, data)
    return PartInfo(path=f"{folder}/{final.name}", documents=len(lines), sha256=hashlib.sha256(data).hexdigest(),
                    bytes=len(data), start=start, end=end, empty_documents=empty_documents,
                    empty_vectors=empty_vectors, invalid_lines=invalid_lines, terms=terms, invalid=invalid)
