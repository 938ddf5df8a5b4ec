"""Float document weights: ``encode --weights float`` stores the encoder's positive weights, the manifest
says so, a Lucene impact index quantises them on the way in to the very index the integer collection gives, and
Seismic stores the floats (as the LACONIC authors do). Old integer collections keep working everywhere.

Real components: splade-tiny, real SciFact, the real JVM and Anserini, real pyseismic-lsr.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from conftest import assert_same_impacts, model_dir, require


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory, data_root):
    """The first 300 SciFact documents encoded twice by one loaded encoder (same batches, so the same floats):
    integer impacts and float weights, each with its Lucene impact index."""
    from laconic_pyserini.encode import encode_corpus
    from laconic_pyserini.index.impact import build_impact_index
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec

    model_dir("splade-tiny")
    work = tmp_path_factory.mktemp("float-pair")
    corpus = work / "corpus.jsonl"
    with open(data_root / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        corpus.write_text("".join(itertools.islice(f, 300)), encoding="utf-8")
    encoder = load_sparse_encoder(load_spec("splade-tiny"))
    out = {"corpus": corpus, "encoder": encoder}
    for weights in ("impact", "float"):
        encode_corpus(corpus, work / weights, encoder=encoder, part_size=128, progress=False, weights=weights)
        out[weights] = {"encoded": work / weights,
                        "index": build_impact_index(work / weights, work / f"{weights}-index", threads=1)}
    return out


def test_manifest_says_which_weights_a_collection_holds(small_pair):
    from laconic_pyserini.encode import read_manifest

    floats, impacts = read_manifest(small_pair["float"]["encoded"]), read_manifest(small_pair["impact"]["encoded"])
    assert floats.weights == "float" and floats.settings["weights"] == "float"
    assert json.loads((floats.root / "manifest.json").read_text())["weights"] == "float"
    # An integer collection records no setting (as every collection before the option), and reads as impacts.
    assert impacts.weights == "impact" and "weights" not in impacts.settings
    assert json.loads((impacts.root / "manifest.json").read_text())["weights"] == "impact"
    index = {w: json.loads((small_pair[w]["index"] / "manifest.json").read_text()) for w in ("impact", "float")}
    assert (index["float"]["encoding_weights"], index["impact"]["encoding_weights"]) == ("float", "impact")


def test_float_collection_gives_the_integer_lucene_index(small_pair):
    """The float collection quantised on the way in is, line for line, the integer collection of the same vectors;
    both Lucene indexes hold the same postings and score every query the same."""
    from laconic_pyserini.encode.manifest import iter_documents, read_manifest
    from laconic_pyserini.encode.writer import vector_line
    from laconic_pyserini.quantize import positive_weights, quantize
    from laconic_pyserini.searchers.impact import LaconicSearcher

    floats = list(iter_documents(small_pair["float"]["encoded"]))
    impacts = list(iter_documents(small_pair["impact"]["encoded"]))
    assert [d for d, _, _ in floats] == [d for d, _, _ in impacts]
    # Floats as the encoder gave them (positive, not rounded), and exactly what the integer writer quantised.
    assert any(not float(w).is_integer() for _, _, v in floats for w in v.values())
    assert all(v == positive_weights(v) for _, _, v in floats)
    assert [vector_line(d, c, quantize(v)) for d, c, v in floats] == [vector_line(d, c, v) for d, c, v in impacts]
    manifest = read_manifest(small_pair["impact"]["encoded"])
    on_disk = b"".join((manifest.root / p.path).read_bytes() for p in manifest.parts).decode("utf-8")
    assert "".join(vector_line(d, c, quantize(v)) for d, c, v in floats) == on_disk
    # The two Lucene indexes: same statistics, same hits and scores for every query (impacts of the float docs'
    # own terms, so that every posting list is read).
    from laconic_pyserini import jvm

    jvm.start()
    from pyserini.index.lucene import LuceneIndexReader

    readers = [LuceneIndexReader(str(small_pair[w]["index"])) for w in ("impact", "float")]
    assert readers[0].stats() == readers[1].stats() and readers[0].stats()["documents"] == 300
    wanted = dict((d, v) for d, _, v in impacts)
    for term in sorted({t for _, _, v in impacts[:5] for t in v}):
        postings = [{r.convert_internal_docid_to_collection_docid(p.docid): p.tf
                     for p in r.get_postings_list(term, analyzer=None)} for r in readers]
        assert postings[0] == postings[1] == {d: v[term] for d, v in wanted.items() if term in v}, term
    queries = {f"q{i}": quantize(v) for i, (_, _, v) in enumerate(floats[:40]) if quantize(v)}
    runs = [LaconicSearcher(small_pair[w]["index"], small_pair["encoder"]).batch_search(queries, 50)
            for w in ("impact", "float")]
    assert runs[0] == runs[1] and all(len(hits) == 50 for hits in runs[0].values())


def test_seismic_stores_float_documents_and_scores_them(encoded, data_root):
    """Seismic built from the float collection holds the encoder's weights: a hit's score is Σ w_q · w_d, with each
    w_d in half precision (pyseismic-lsr 0.5 stores document values as f16: exact for integer impacts up to 2048,
    11 significant bits for floats, finer than the 1/100 of an impact for every weight below 20)."""
    require("seismic", "pip install 'laconic-pyserini[seismic]' (pyseismic-lsr)")
    from laconic_pyserini.encode.manifest import iter_vectors
    from laconic_pyserini.quantize import quantize
    from laconic_pyserini.searchers.seismic import SeismicSearcher
    from laconic_pyserini.topics import load_topics

    floats, integers = encoded("splade-tiny", "scifact", "float"), encoded("splade-tiny", "scifact")
    documents = dict(iter_vectors(floats["encoded"]))
    # The whole SciFact encoded both ways (two processes' worth of batches): the impacts of the floats are the
    # integer collection's, up to the rare one-unit flips of another BLAS kernel.
    assert_same_impacts({d: quantize(v) for d, v in documents.items()}, dict(iter_vectors(integers["encoded"])))
    searcher = SeismicSearcher(floats["index"], query_weights="float", query_cut=10, heap_factor=0.7)
    assert searcher.info["weights"] == "float"
    assert json.loads((floats["index"] / "seismic" / "manifest.json").read_text())["weights"] == "float"
    topics = dict(list(load_topics(data_root / "scifact", "test").items())[:8])
    queries = searcher.queries.encode(list(topics.values()))
    run = searcher.batch_search(dict(zip(topics, queries)), 10)
    fractional = 0
    for (qid, hits), query in zip(run.items(), queries):
        assert len(hits) == 10, qid
        for doc_id, score in hits:
            exact = sum(np.float32(w) * float(np.float16(documents[doc_id].get(t, 0.0))) for t, w in query.items())
            assert score == pytest.approx(exact, rel=1e-5), (qid, doc_id)
            fractional += not float(exact * 100).is_integer()
    assert fractional > 0  # float documents, not impacts: scores are not multiples of 1/100 of a query weight


def test_bad_weights_and_a_resume_with_other_weights_are_one_error_line(small_pair, tmp_path, capsys):
    from laconic_pyserini.encode.__main__ import main as encode_main

    out = tmp_path / "enc"
    assert encode_main(["--corpus", str(small_pair["corpus"]), "--embeddings", str(out), "--encoder", "splade-tiny",
                        "--weights", "floats"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --weights floats: choose impact or float" and not out.exists()
    # Resuming the float folder without --weights float would mix integers into it: refused, nothing written.
    folder = small_pair["float"]["encoded"]
    before = (folder / "manifest.json").read_bytes()
    assert encode_main(["--corpus", str(small_pair["corpus"]), "--embeddings", str(folder), "--encoder",
                        "splade-tiny", "--part-size", "128", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {folder / 'manifest.json'}: written with weights='float', this run has "
                          "'impact'"), err
    assert (folder / "manifest.json").read_bytes() == before
