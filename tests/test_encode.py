"""``laconic_pyserini.encode``: bad input, resume after ``kill -9``, sharding, the manifest, query formats.

Real splade-tiny and real SciFact documents throughout; Anserini and pyserini are the real consumers of what is
written. ``max_length`` is cut to 32 in most tests only to keep them fast (the whole-corpus run uses 256).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest

from conftest import REPO, model_dir
from laconic_pyserini.data import DataError, iter_corpus
from laconic_pyserini.encode import (EMPTY_TERM, EncodeError, encode_corpus, iter_vectors, merge_shards,
                                     read_manifest, verify_collection)
from laconic_pyserini.encode.__main__ import build_parser, main, strip_groups
from laconic_pyserini.encode.shards import resolve_shard
from laconic_pyserini.encode.source import is_question_corpus, resolve_docs_as_queries
from laconic_pyserini.quantize import quantize

SHORT = 32


@pytest.fixture(scope="module")
def splade():
    """splade-tiny with max length 32, loaded once for the module."""
    model_dir("splade-tiny")
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec

    return load_sparse_encoder(load_spec("splade-tiny", max_length=SHORT))


def _scifact_lines(data_root: Path, n: int) -> list[str]:
    with open(data_root / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in islice(f, n)]


def _corpus(tmp_path: Path, lines: list[str | bytes], name: str = "corpus.jsonl") -> Path:
    path = tmp_path / name
    with open(path, "wb") as f:
        for line in lines:
            f.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\n")
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------- bad input

BAD_LINES = {
    "malformed JSON": ('{"_id": "bad", "title": "", "text": "unterminated"', "not valid JSON"),
    "missing id": ('{"title": "t", "text": "no id here"}', "has no id"),
    "duplicate id": (None, "duplicate document id"),  # filled with a copy of the first line
    "non-UTF-8": (b'{"_id": "latin1", "title": "", "text": "caf\xe9"}', "not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_is_an_error_with_file_and_line(tmp_path, data_root, splade, case, capsys):
    good = _scifact_lines(data_root, 5)
    bad, message = BAD_LINES[case]
    corpus = _corpus(tmp_path, good[:3] + [good[0] if bad is None else bad] + good[3:])
    with pytest.raises(DataError) as caught:
        encode_corpus(corpus, tmp_path / "out", encoder=splade, progress=False)
    assert f"{corpus}:4: " in str(caught.value) and message in str(caught.value)

    # The CLI: one line on stderr, exit status 2, no traceback.
    rc = main(["input", "--corpus", str(corpus), "output", "--embeddings", str(tmp_path / "cli"),
               "encoder", "--encoder", "splade-tiny", "--max-length", str(SHORT), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: ") and f"{corpus}:4: " in err[-1] and message in err[-1]
    assert not any("Traceback" in line for line in err)


def test_skip_invalid_skips_and_counts(tmp_path, data_root, splade):
    good = _scifact_lines(data_root, 6)
    lines = [good[0], BAD_LINES["malformed JSON"][0], good[1], BAD_LINES["missing id"][0], good[2], good[0],
             BAD_LINES["non-UTF-8"][0], good[3], '{"_id": "empty", "title": "", "text": ""}', good[4], good[5],
             BAD_LINES["malformed JSON"][0]]  # a trailing bad line after the last part
    corpus = _corpus(tmp_path, lines)
    manifest = encode_corpus(corpus, tmp_path / "out", encoder=splade, skip_invalid=True, part_size=7,
                             progress=False)
    counts = manifest.counts
    assert counts["documents"] == 7 and counts["invalid_lines"] == 5 and counts["empty_documents"] == 1
    assert [i["line"] for i in read_manifest(tmp_path / "out").to_dict()["invalid"]] == [2, 4, 6, 7, 12]
    ids = [doc_id for doc_id, _ in iter_vectors(tmp_path / "out")]
    expected = [json.loads(good[i])["_id"] for i in range(4)] + ["empty"] + [json.loads(good[i])["_id"] for i in (4, 5)]
    assert ids == expected
    verify_collection(tmp_path / "out")


# ------------------------------------------------------------------------------------------------- resume


def _cli(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "laconic_pyserini.encode", "input", "--corpus", str(corpus),
            "output", "--embeddings", str(out), "--part-size", "40",
            "encoder", "--encoder", "splade-tiny", "--max-length", str(SHORT), "--batch-size", "8",
            "--no-progress", *extra]


def test_kill9_and_rerun_gives_the_uninterrupted_output(tmp_path, data_root, splade):
    corpus = _corpus(tmp_path, _scifact_lines(data_root, 240))
    reference = encode_corpus(corpus, tmp_path / "reference", encoder=splade, batch_size=8, part_size=40,
                              progress=False)
    assert len(reference.parts) == 6

    # The test hook ends the process with os._exit right after its second committed part: no cleanup, no
    # finally, exactly what kill -9 leaves -- at a known point instead of a timing race.
    out = tmp_path / "killed"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), LACONIC_TEST_STOP_AFTER_PARTS="2")
    proc = subprocess.run(_cli(corpus, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.returncode == 137, proc.stderr.decode()[-2000:]
    state = json.loads((out / "manifest.json").read_text())
    assert not state["complete"] and len(state["parts"]) == 2
    assert list(out.glob(".laconic-tmp-*.lock")), "the killed run's lock is left behind, as after kill -9"
    # Debris of a kill during a commit: a temporary file of ours, and a part renamed before the manifest listed it.
    (out / "vectors" / ".laconic-tmp-999999-part-00005.jsonl").write_text("half a line")
    (out / "vectors" / "part-00004.jsonl").write_text('{"id": "stray"}\n')

    # The same command again (in this process, to save a second interpreter start): the stale lock is taken over.
    assert main(_cli(corpus, out)[3:]) == 0
    assert _files(out / "vectors") == _files(tmp_path / "reference" / "vectors")
    # Equal but for the per-run kernel records (laconic_pyserini.modeling.cpu): two runs wrote the resumed folder.
    resumed, uninterrupted = read_manifest(out).to_dict(), read_manifest(tmp_path / "reference").to_dict()
    assert [k["first_part"] for k in resumed.pop("kernels")] == [0, len(state["parts"])]
    assert [k["first_part"] for k in uninterrupted.pop("kernels")] == [0]
    assert resumed == uninterrupted
    assert read_manifest(out).counts["documents"] == 240
    assert not list(out.glob(".laconic-tmp-*")), "the lock is released"


def test_rerun_with_another_spec_is_refused(tmp_path, data_root, splade, capsys):
    corpus = _corpus(tmp_path, _scifact_lines(data_root, 20))
    encode_corpus(corpus, tmp_path / "out", encoder=splade, progress=False)
    before = _files(tmp_path / "out")
    rc = main(["--corpus", str(corpus), "--embeddings", str(tmp_path / "out"), "--encoder", "splade-tiny",
               "--max-length", "64", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "encoded with encoder 'splade-tiny'" in err and "max_length" in err
    assert _files(tmp_path / "out") == before
    # The same spec again: already complete, nothing rewritten.
    assert encode_corpus(corpus, tmp_path / "out", encoder=splade, progress=False).complete
    assert _files(tmp_path / "out") == before
    # A manifest written before the spec gained logit_offset records the same encoder (offset 0): still accepted.
    manifest_file = tmp_path / "out" / "manifest.json"
    older = json.loads(manifest_file.read_text())
    del older["spec"]["logit_offset"]
    manifest_file.write_text(json.dumps(older))
    assert encode_corpus(corpus, tmp_path / "out", encoder=splade, progress=False).complete


def test_incomplete_or_foreign_folder_is_a_clear_error(tmp_path):
    with pytest.raises(EncodeError, match="manifest.json: missing"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(EncodeError, match="not an encoded-collection manifest"):
        read_manifest(tmp_path)


# ------------------------------------------------------------------------------------------------- shards


def test_three_shards_cover_the_corpus_exactly_once(tmp_path, data_root, splade):
    lines = _scifact_lines(data_root, 100)
    corpus = _corpus(tmp_path, lines)
    out = tmp_path / "sharded"
    for k in (2, 0, 1):  # any order; the last one to finish merges
        manifest = encode_corpus(corpus, out, encoder=splade, shard_id=k, shard_num=3, part_size=15, progress=False)
    assert manifest.complete and manifest.shard["num"] == 3 and manifest.documents == 100
    assert [doc_id for doc_id, _ in iter_vectors(out)] == [json.loads(line)["_id"] for line in lines]
    assert [s["documents"] for s in manifest.shards] == [33, 33, 34]
    verify_collection(out)
    assert main(["verify", "--embeddings", str(out), "--corpus", str(corpus)]) == 0
    assert main(["merge", "--embeddings", str(out)]) == 0

    # A part changed after the fact is caught by its checksum.
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    part = tampered / manifest.parts[-1].path
    part.write_bytes(part.read_bytes().replace(b'"vector": {"', b'"vector": {"x": 1, "', 1))
    with pytest.raises(EncodeError, match="differ from the manifest's sha256"):
        verify_collection(tampered)

    # A missing shard is named.
    broken = tmp_path / "missing"
    shutil.copytree(out, broken)
    (broken / "manifest.json").unlink()
    (broken / "shards" / "shard-01-of-03.json").unlink()
    with pytest.raises(EncodeError, match=r"shard\(s\) 1 of 3 missing.*--shard-id 1 --shard-num 3"):
        merge_shards(broken)

    # A shard whose parts repeat another shard's documents is caught by id.
    overlap = tmp_path / "overlap"
    shutil.copytree(out, overlap)
    path = overlap / "shards" / "shard-01-of-03.json"
    shard1 = json.loads(path.read_text())
    shard0 = json.loads((overlap / "shards" / "shard-00-of-03.json").read_text())
    shard1["parts"].insert(0, shard0["parts"][0])
    path.write_text(json.dumps(shard1))
    with pytest.raises(EncodeError, match="written twice.*overlapping shards"):
        merge_shards(overlap)

    # A shard encoded with other weights is named with both settings, the unrecorded default spelled out.
    floats = tmp_path / "floats"
    shutil.copytree(out, floats)
    path = floats / "shards" / "shard-02-of-03.json"
    shard2 = json.loads(path.read_text())
    assert "weights" not in shard2["settings"]  # integer impacts: the default, not recorded
    shard2["settings"]["weights"] = "float"
    path.write_text(json.dumps(shard2))
    with pytest.raises(EncodeError, match="shard-02-of-03.json: setting weights='float', shard 0 has 'impact'"):
        merge_shards(floats)

    # A shard from another split of the same corpus is refused before any id is read.
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed)
    shutil.copy(mixed / "shards" / "shard-00-of-03.json", mixed / "shards" / "shard-00-of-02.json")
    with pytest.raises(EncodeError, match="different splits"):
        merge_shards(mixed)

    # The merged folder refuses a shard of another split.
    with pytest.raises(EncodeError, match="split 3 way"):
        encode_corpus(corpus, out, encoder=splade, shard_id=0, shard_num=2, progress=False)


def test_shard_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_shard(None, None) == (2, 4)
    assert resolve_shard(0, 2) == (0, 2)  # flags win
    monkeypatch.delenv("WORLD_SIZE")
    assert resolve_shard(None, None) == (0, 1)
    with pytest.raises(EncodeError):
        resolve_shard(3, 3)


# ------------------------------------------------------------------------------------------------- CLI, datasets


def test_group_words_are_dropped_only_where_an_option_is_expected():
    parser = build_parser()
    argv = ["input", "--corpus", "c", "--fields", "text", "output", "--embeddings", "output", "encoder",
            "--encoder", "encoder"]
    args = parser.parse_args(strip_groups(argv, parser))
    assert (args.corpus, args.fields, args.embeddings, args.encoder) == ("c", ["text"], "output", "encoder")


def test_question_corpora_are_known_by_name_never_by_path(tmp_path, data_root, splade):
    """BEIR Quora / CQADupStack documents take the query prefix; only the dataset's name (or a flag) says so."""
    for name in ("quora", "beir/quora", "cqadupstack/android", "beir/cqadupstack/android", "cqadupstack-android"):
        assert is_question_corpus(name) and resolve_docs_as_queries(name), name
    assert not is_question_corpus("scifact") and not resolve_docs_as_queries("beir/scifact")
    # A SciFact copy kept under a folder named after Quora is SciFact: the folders above a corpus say nothing.
    copy = tmp_path / "quora-experiments" / "scifact"
    copy.mkdir(parents=True)
    corpus = _corpus(copy, _scifact_lines(data_root, 3))
    assert not is_question_corpus(copy) and not is_question_corpus(corpus)
    # splade-tiny has no prefixes; the same model under LACONIC's two prefixes shows which one was used.
    import dataclasses

    from laconic_pyserini.modeling.loading import LoadedModel
    from laconic_pyserini.modeling.sparse_encoder import SparseEncoder

    prefixed = SparseEncoder(dataclasses.replace(splade.spec, query_prefix="query: ", passage_prefix="passage: "),
                             LoadedModel(splade.model, splade.tokenizer, "", ""))
    manifest = encode_corpus(copy, tmp_path / "enc", encoder=prefixed, progress=False)
    assert manifest.settings["docs_as_queries"] is False
    texts = [doc.contents for doc in iter_corpus(copy)]
    written = dict(iter_vectors(read_manifest(tmp_path / "enc")))
    passages, questions = ([quantize(v, splade.spec.quant_scale) for v in prefixed.encode_documents(texts, as_query=q)]
                           for q in (False, True))
    assert list(written.values()) == passages != questions
    # A folder named like a question corpus is a path, not a name: the user must say which prefix.
    quora = tmp_path / "data" / "quora"
    quora.mkdir(parents=True)
    _corpus(quora, _scifact_lines(data_root, 3))
    with pytest.raises(DataError, match="--docs-as-queries"):
        encode_corpus(quora, tmp_path / "enc-quora", encoder=splade, progress=False)
    assert resolve_docs_as_queries(quora, True) is True
    assert resolve_docs_as_queries(quora / "corpus.jsonl", False) is False
    assert encode_corpus(quora, tmp_path / "enc-quora", encoder=splade, docs_as_queries=True,
                         progress=False).settings["docs_as_queries"] is True


# ------------------------------------------------------------------------------------------------- Anserini


def test_empty_vectors_survive_anserini_indexing(tmp_path, data_root, splade):
    """Anserini 1.7.1 silently drops a document whose vector is ``{}``; the placeholder term keeps it."""
    from laconic_pyserini import jvm
    from laconic_pyserini.encode.writer import commit_part, vector_line

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "docs.jsonl").write_text('{"id": "a", "contents": "", "vector": {"x": 3}}\n'
                                      '{"id": "b", "contents": "", "vector": {}}\n')
    ours = tmp_path / "ours"
    commit_part(ours, "vectors", 0, [vector_line("a", "", {"x": 3}), vector_line("b", "", {})], start=0, end=2,
                empty_documents=1, empty_vectors=1, invalid=[], invalid_lines=0, terms=1)
    counts = {}
    for name, folder in (("plain", plain), ("ours", ours / "vectors")):
        index = tmp_path / f"index-{name}"
        jvm.autoclass("io.anserini.index.IndexCollection").main(
            ["-collection", "JsonVectorCollection", "-input", str(folder), "-index", str(index),
             "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized", "-threads", "1"])
        from pyserini.index.lucene import LuceneIndexReader

        counts[name] = LuceneIndexReader(str(index)).stats()["documents"]
    assert counts == {"plain": 1, "ours": 2}
    line = json.loads((ours / "vectors" / "part-00000.jsonl").read_text().splitlines()[1])
    assert line["vector"] == {EMPTY_TERM: 1}


def test_terms_with_whitespace_are_refused():
    from laconic_pyserini.encode.query import tsv_line
    from laconic_pyserini.encode.writer import vector_line

    for term in ("foo bar", "tab\there", "nbsp\u00a0x", ""):
        with pytest.raises(EncodeError, match="whitespace"):
            vector_line("d", "", {term: 2})
        with pytest.raises(EncodeError, match="whitespace"):
            tsv_line("q", {term: 2})
    assert tsv_line("q1", {"Ġheart": 2, "##s": 1, "[CLS]": 3}) == "q1\t[CLS] [CLS] [CLS] Ġheart Ġheart ##s\n"


# ------------------------------------------------------------------------------------------------- queries


@pytest.fixture(scope="module")
def splade_256():
    model_dir("splade-tiny")
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec

    return load_sparse_encoder(load_spec("splade-tiny"))


def test_query_files_read_back_by_pyserini(tmp_path, splade_256):
    """TSV through pyserini's own topic reader and whitespace counting; JSONL through its cached-vector encoder."""
    from laconic_pyserini import jvm
    from laconic_pyserini.encode import encode_topics

    jvm.start()
    from pyserini.encode import TokFreqQueryEncoder
    from pyserini.encode._cached_data import CachedDataQueryEncoder
    from pyserini.query_iterator import DefaultQueryIterator

    tsv = tmp_path / "queries.tsv"
    impacts = encode_topics("scifact", tsv, encoder=splade_256, split="test")
    assert len(impacts) == 300 and all(impacts.values())
    read_back = {str(qid): TokFreqQueryEncoder().encode(text) for qid, text in DefaultQueryIterator.from_topics(str(tsv))}
    assert read_back == impacts

    jsonl = tmp_path / "queries.jsonl"
    assert encode_topics("scifact", jsonl, encoder=splade_256, split="test") == impacts
    from laconic_pyserini.topics import load_topics

    cached = CachedDataQueryEncoder(str(jsonl))
    assert {qid: cached.encode(text) for qid, text in load_topics("scifact", "test").items()} == impacts
    sidecar = json.loads((tmp_path / "queries.jsonl.manifest.json").read_text())
    assert sidecar["spec"]["name"] == "splade-tiny" and sidecar["queries"] == 300


def test_query_vectors_look_like_splade(tmp_path, splade_256):
    from laconic_pyserini.encode import encode_topics

    vector = encode_topics({"q1": "heart attack"}, tmp_path / "q.tsv", encoder=splade_256)["q1"]
    top = sorted(vector, key=vector.get, reverse=True)[:5]
    assert "heart" in top and "attack" in top
    assert (tmp_path / "q.tsv").read_text().startswith("q1\t")
    with pytest.raises(EncodeError, match="--format"):
        encode_topics({"q1": "x"}, tmp_path / "q.txt", encoder=splade_256)


def test_gzipped_pyserini_jsonl_corpus(tmp_path, data_root, splade):
    import gzip

    docs = [json.loads(line) for line in _scifact_lines(data_root, 12)]
    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for d in docs:  # pyserini's layout: id + contents
            f.write(json.dumps({"id": d["_id"], "contents": f"{d['title']} {d['text']}"}) + "\n")
    manifest = encode_corpus(path, tmp_path / "out", encoder=splade, progress=False)
    assert manifest.corpus["lines"] == 12
    written = [json.loads(line) for line in (tmp_path / "out" / "vectors" / "part-00000.jsonl").read_text().splitlines()]
    assert [w["id"] for w in written] == [d["_id"] for d in docs]
    assert written[0]["contents"] == f"{docs[0]['title']} {docs[0]['text']}"
    assert all(isinstance(v, int) and v > 0 for w in written for v in w["vector"].values())
