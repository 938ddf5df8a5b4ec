"""Topics (``{qid: text}``) and qrels (``{qid: {docid: grade}}``) of a dataset.

Topics come from a BEIR folder or name (``queries.jsonl``, kept to the queries judged in ``qrels/<split>.tsv``), a
TSV file (``qid<TAB>text``) or a JSONL file (``_id``/``id`` and ``text``/``title``). Split from
:mod:`laconic_pyserini.data` (corpora and datasets), which it reads through.
"""

from __future__ import annotations

import os
from pathlib import Path

from .data import DataError, iter_jsonl, iter_lines, resolve_dataset, with_gz
from .ids import trec_id


def qrels_file(source: str | os.PathLike, split: str) -> Path:
    folder = resolve_dataset(source)
    found = with_gz(folder / "qrels" / f"{split}.tsv")
    if found is None:
        available = sorted(p.name.split(".")[0] for p in (folder / "qrels").glob("*.tsv*")) \
            if (folder / "qrels").is_dir() else []
        raise DataError(folder / "qrels" / f"{split}.tsv", None, f"no qrels for split {split!r}",
                        f"choose one of {available}" if available else "add qrels/<split>.tsv")
    return found


def load_qrels(source: str | os.PathLike, split: str = "test") -> dict[str, dict[str, int]]:
    """``{query_id: {doc_id: grade}}`` from a BEIR qrels TSV (a header line is recognised and skipped).

    A TREC qrels file (``qid 0 docid grade``) may be given directly as ``source``.
    """
    path = Path(source)
    if not path.is_file():
        path = qrels_file(source, split)
    qrels: dict[str, dict[str, int]] = {}
    for number, line in iter_lines(path):
        cols = line.split("\t") if "\t" in line else line.split()
        if number == 1 and cols[0] in ("query-id", "query_id", "qid"):
            continue
        if len(cols) == 4:  # TREC: qid iteration docid grade
            cols = [cols[0], cols[2], cols[3]]
        if len(cols) != 3:
            raise DataError(path, number, f"expected 3 columns (query-id, corpus-id, score), got {len(cols)}",
                            "use BEIR's TSV layout or TREC's 4 columns")
        try:
            grade = int(float(cols[2]))
        except (ValueError, OverflowError):  # "x", "nan", "inf"
            raise DataError(path, number, f"score {cols[2]!r} is not a finite number") from None
        query_id, doc_id = trec_id(cols[0], path, number, "query"), trec_id(cols[1], path, number, "document")
        qrels.setdefault(query_id, {})[doc_id] = grade
    if not qrels:
        raise DataError(path, None, "no judgements in the qrels file")
    return qrels


def load_topics(source: str | os.PathLike, split: str | None = "test") -> dict[str, str]:
    """``{query_id: text}``, in file order.

    From a BEIR folder or name, only queries judged in ``qrels/<split>.tsv`` are kept (``split=None``: all).
    A ``.tsv`` file is ``qid<TAB>text``; a ``.jsonl`` file has ``_id``/``id`` and ``text``/``title``.
    Duplicate ids and empty files are errors.
    """
    path = Path(source)
    keep: set[str] | None = None
    if path.is_file():
        topics_path = path
    else:
        folder = resolve_dataset(source)
        found = with_gz(folder / "queries.jsonl")
        if found is None:
            raise DataError(folder / "queries.jsonl", None, "no queries file", "add queries.jsonl")
        topics_path = found
        if split is not None:
            keep = set(load_qrels(folder, split))
    name = topics_path.name.removesuffix(".gz")
    topics: dict[str, str] = {}
    if name.endswith(".tsv") or name.endswith(".txt"):
        rows = ((n, *_split_tsv(topics_path, n, line)) for n, line in iter_lines(topics_path))
    else:
        rows = ((n, *_topic_json(topics_path, n, obj)) for n, obj in iter_jsonl(topics_path))
    for number, qid, text in rows:
        if keep is not None and qid not in keep:
            continue
        if qid in topics:
            raise DataError(topics_path, number, f"duplicate query id {qid!r}", "query ids must be unique")
        topics[qid] = text
    if not topics:
        raise DataError(topics_path, None, "no topics" + (f" judged in split {split!r}" if keep is not None else ""),
                        "check the file and the --split")
    return topics


def _split_tsv(path: Path, number: int, line: str) -> tuple[str, str]:
    qid, sep, text = line.partition("\t")
    if not sep:
        raise DataError(path, number, "expected 'qid<TAB>text'", "separate the id and the text with a tab")
    return trec_id(qid, path, number, "query"), text


def _topic_json(path: Path, number: int, obj: dict) -> tuple[str, str]:
    qid = obj.get("_id", obj.get("id", obj.get("qid")))
    text = obj.get("text", obj.get("title", obj.get("contents")))
    if qid is None:
        raise DataError(path, number, "query has no id (expected '_id' or 'id')")
    qid = trec_id(qid, path, number, "query")
    if not isinstance(text, str):
        raise DataError(path, number, f"query {qid!r} has no 'text'")
    return str(qid), text
