"""Datasets that are not local: fetched once through ``ir_datasets`` and exported as a BEIR folder.

Reached only from :func:`laconic_pyserini.data.resolve_dataset` for a name that is not under ``$LACONIC_DATA``.
Nothing is created until the download has delivered its first document, so a dataset that is unknown or
unreachable (no network) ends in one DataError and leaves no folder behind.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from .errors import DataError


def export_ir_datasets(name: str, dataset_id: str, out: Path, root: Path | None) -> Path:
    """The BEIR folder ``out`` for the ir_datasets id ``dataset_id`` (``name`` as the user wrote it)."""
    try:
        import ir_datasets
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise DataError(name, None, "unknown dataset and ir_datasets is not installed",
                        "pass a BEIR folder or install ir_datasets") from exc
    try:
        base = ir_datasets.load(dataset_id)
    except KeyError:
        raise DataError(name, None, f"unknown dataset: not a folder, not under {root} ($LACONIC_DATA), "
                        f"and not an ir_datasets id ({dataset_id!r})",
                        "pass a BEIR folder, set LACONIC_DATA, or use an id such as beir/scifact") from None
    try:
        docs = iter(base.docs_iter())  # the download happens here
        first = next(docs, None)
    except OSError as exc:  # requests' and urllib's errors are OSErrors
        raise DataError(name, None, f"dataset not found under {root} ($LACONIC_DATA) and not reachable through "
                        f"ir_datasets ({dataset_id!r}: {type(exc).__name__}: {exc})",
                        "put the BEIR folder under $LACONIC_DATA or pass its path") from None
    if first is None:
        raise DataError(name, None, f"ir_datasets {dataset_id!r} has no documents")
    return _write_beir_folder(ir_datasets, base, dataset_id, out, first, docs)


def _write_beir_folder(ir_datasets, base, dataset_id: str, out: Path, first, docs) -> Path:
    tmp = out.with_name(out.name + ".partial")
    (tmp / "qrels").mkdir(parents=True, exist_ok=True)
    family = dataset_id.rsplit("/", 1)[0] if dataset_id.count("/") > 1 else dataset_id
    with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc in itertools.chain([first], docs):
            f.write(json.dumps({"_id": doc.doc_id, "title": getattr(doc, "title", "") or "",
                                "text": doc.text}) + "\n")
    queries: dict[str, str] = {}
    for split in ("train", "dev", "test"):
        try:
            sub = ir_datasets.load(f"{family}/{split}")
        except KeyError:
            continue
        _write_split(sub, split, tmp, queries)
    if base.has_qrels():
        _write_split(base, "test", tmp, queries)
    with open(tmp / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    tmp.rename(out)
    return out


def _write_split(dataset, split: str, out: Path, queries: dict[str, str]) -> None:
    for q in dataset.queries_iter():
        queries[q.query_id] = q.text
    with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qrel in dataset.qrels_iter():
            f.write(f"{qrel.query_id}\t{qrel.doc_id}\t{qrel.relevance}\n")
