"""Dataset loading on real BEIR folders, and a clear file:line error for every kind of bad input."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from laconic_pyserini import data
from laconic_pyserini.topics import load_qrels, load_topics
from laconic_pyserini.data import DataError


def _beir(tmp_path, corpus_lines, queries=None, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\n"):
    folder = tmp_path / "mini"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(line + "\n" for line in corpus_lines), encoding="utf-8")
    queries = queries or [json.dumps({"_id": "q1", "text": "heart attack"})]
    (folder / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return folder


def test_scifact_by_name_and_folder(data_root):
    by_name = data.resolve_dataset("scifact")
    assert by_name == data.resolve_dataset("beir/scifact") == data_root / "scifact"
    assert data.count_corpus("scifact") == 5183
    docs = list(data.iter_corpus(data_root / "scifact"))
    assert len(docs) == 5183 and len({d.id for d in docs}) == 5183
    topics = load_topics("scifact", "test")
    qrels = load_qrels("scifact", "test")
    assert len(topics) == 300 and set(topics) == set(qrels)
    assert len(load_topics("scifact", "train")) == 809
    assert len(load_topics("nfcorpus", "dev")) == 324


def test_gzipped_folder_and_pyserini_jsonl(tmp_path, data_root):
    folder = tmp_path / "gz"
    (folder / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        with open(data_root / "medline" / name, "rb") as src, gzip.open(folder / (name + ".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    plain = list(data.iter_corpus(data_root / "medline"))
    assert list(data.iter_corpus(folder)) == plain
    assert load_topics(folder) == load_topics(data_root / "medline")
    assert load_qrels(folder) == load_qrels(data_root / "medline")
    pyserini_file = tmp_path / "docs.jsonl"
    pyserini_file.write_text("".join(json.dumps({"id": d.id, "contents": d.contents}) + "\n" for d in plain[:5]))
    assert [(d.id, d.text) for d in data.iter_corpus(pyserini_file)] == [(d.id, d.contents) for d in plain[:5]]


def test_topics_tsv_file(tmp_path):
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tfirst query\n2\tsecond\tquery with tab\n")
    assert load_topics(topics) == {"1": "first query", "2": "second\tquery with tab"}


def test_corpus_line_that_is_not_json(tmp_path):
    folder = _beir(tmp_path, ['{"_id": "d1", "text": "ok"}', '{"_id": "d2", "text": oops}'])
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: not valid JSON"):
        list(data.iter_corpus(folder))


def test_document_without_id(tmp_path):
    folder = _beir(tmp_path, ['{"_id": "d1", "text": "ok"}', '{"title": "t", "text": "no id"}'])
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: document has no id"):
        list(data.iter_corpus(folder))


def test_duplicate_document_id(tmp_path):
    folder = _beir(tmp_path, ['{"_id": "d1", "text": "a"}', '{"_id": "d2", "text": "b"}', '{"_id": "d1", "text": "c"}'])
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: duplicate document id 'd1'"):
        list(data.iter_corpus(folder))


def test_non_utf8_bytes(tmp_path):
    folder = _beir(tmp_path, ['{"_id": "d1", "text": "ok"}'])
    with open(folder / "corpus.jsonl", "ab") as f:
        f.write(b'{"_id": "d2", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: not valid UTF-8"):
        list(data.iter_corpus(folder))


def test_missing_qrels_file_names_the_splits(tmp_path, data_root):
    with pytest.raises(DataError, match=r"qrels/dev\.tsv: no qrels for split 'dev' \(choose one of \['test', 'train'\]\)"):
        load_qrels(data_root / "scifact", "dev")


def test_unknown_dataset_name():
    with pytest.raises(DataError, match=r"no-such-dataset-xyz: unknown dataset"):
        data.resolve_dataset("no-such-dataset-xyz")


def test_duplicate_and_empty_topics(tmp_path):
    dup = tmp_path / "dup.tsv"
    dup.write_text("1\ta\n2\tb\n1\tc\n")
    with pytest.raises(DataError, match=r"dup\.tsv:3: duplicate query id '1'"):
        load_topics(dup)
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.tsv: no topics"):
        load_topics(empty)
