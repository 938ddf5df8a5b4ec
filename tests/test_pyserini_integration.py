"""Stock pyserini on this toolkit's indexes: ``LuceneImpactSearcher`` with our ``LaconicQueryEncoder``, and
pyserini's own search CLI run through ``python -m laconic_pyserini.pyserini``, both against our searcher on every
SciFact test query over the first 200 SciFact documents (splade-tiny; and a tiny random Llama with the real
Llama-3 tokenizer for the LACONIC decoder path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import save_tiny_llama

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def topics(scifact200):
    from laconic_pyserini.topics import load_topics

    return load_topics(scifact200, "test")


@pytest.fixture(scope="module")
def tiny_llama200(tmp_path_factory, scifact200, llama3_tokenizer):
    """A random 2-layer Llama (LM head spread as tests/test_quantized.py does) with the Llama-3 tokenizer, its
    encoding of ``scifact200`` and the impact index of it."""
    from laconic_pyserini.encode import encode_corpus
    from laconic_pyserini.index.impact import build_impact_index

    work = tmp_path_factory.mktemp("tiny-llama200")
    spec = save_tiny_llama(work / "tiny-llama", llama3_tokenizer)
    assert spec.kind == "decoder"
    encode_corpus(scifact200, work / "encoded", spec, batch_size=32, progress=False)
    return {"spec": spec, "index": build_impact_index(work / "encoded", work / "index", threads=2)}


def _pyserini_run(results) -> dict[str, list[tuple[str, float]]]:
    return {qid: [(hit.docid, float(hit.score)) for hit in hits] for qid, hits in results.items()}


def _compare_with_stock_pyserini(index: Path, encoder_name, topics: dict[str, str]) -> dict[str, int]:
    """Stock ``LuceneImpactSearcher`` + ``LaconicQueryEncoder`` against ``open_searcher`` on every query; returns
    how many queries lose a term to pyserini's ``min_idf`` filter and how many rankings that changes."""
    from laconic_pyserini import load_encoder, open_searcher
    from laconic_pyserini.integrations.pyserini import LaconicQueryEncoder
    from pyserini.encode import QueryEncoder
    from pyserini.search.lucene import LuceneImpactSearcher

    encoder = load_encoder(encoder_name)
    query_encoder = LaconicQueryEncoder(encoder)
    assert isinstance(query_encoder, QueryEncoder)
    qids, texts = list(topics), list(topics.values())
    stock = LuceneImpactSearcher(str(index), query_encoder)
    default = _pyserini_run(stock.batch_search(texts, qids, k=10, threads=2))
    stock.min_idf = -1  # keep terms found in every document (idf = log(N/df) = 0), as our searcher does
    every_term = _pyserini_run(stock.batch_search(texts, qids, k=10, threads=2))
    one_by_one = {qid: [(hit.docid, float(hit.score)) for hit in stock.search(topics[qid], k=10)] for qid in qids[:20]}
    with open_searcher(index, encoder=encoder.model) as ours:
        # One query at a time on both sides: a query encoded alone, as pyserini encodes it (in a padded batch a
        # decoder's last float bits move, and an impact may flip by one).
        assert {qid: [tuple(hit) for hit in ours.search(text, k=10)] for qid, text in topics.items()} == every_term
        assert one_by_one == {qid: every_term[qid] for qid in one_by_one}
        # pyserini's default drops the terms every document holds; our searcher given the same vectors without
        # those terms answers what it answers.
        dropped = {term for term, idf in stock.idf.items() if idf <= 0}
        vectors = {qid: encoder.encode_query(text, impacts=True) for qid, text in topics.items()}
        cut = {qid: {t: w for t, w in vector.items() if t not in dropped} for qid, vector in vectors.items()}
        assert _pyserini_run(ours.batch_search(cut, k=10)) == default
    stock.close()
    return {"queries_losing_terms": sum(cut[q] != vectors[q] for q in qids),
            "rankings_changed": sum(default[q] != every_term[q] for q in qids)}


def test_stock_pyserini_with_our_query_encoder_splade(splade200, topics):
    effect = _compare_with_stock_pyserini(splade200["index"], "splade-tiny", topics)
    assert effect["rankings_changed"] <= effect["queries_losing_terms"]


def test_stock_pyserini_with_our_query_encoder_decoder(tiny_llama200, topics):
    effect = _compare_with_stock_pyserini(tiny_llama200["index"], tiny_llama200["spec"], topics)
    # A random decoder gives every document some of the same terms: pyserini's default search loses them.
    assert effect["queries_losing_terms"] > 0 and effect["rankings_changed"] > 0


def test_pyserini_search_cli_through_our_jvm_gives_our_run(splade200, scifact200, tmp_path):
    from laconic_pyserini import open_searcher
    from laconic_pyserini.encode import encode_topics
    from laconic_pyserini.run import read_trec_run

    # pyserini's pre-encoded TSV: each term repeated by its impact; read by pyserini's whitespace term counter.
    vectors = encode_topics(scifact200, tmp_path / "queries.tsv", "splade-tiny")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "laconic_pyserini.pyserini", "pyserini.search.lucene", "--impact",
               "--index", str(splade200["index"]), "--topics", str(tmp_path / "queries.tsv"),
               "--output", str(tmp_path / "run.txt"), "--hits", "10", "--min-idf", "-1"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open_searcher(splade200["index"]) as ours:
        assert read_trec_run(tmp_path / "run.txt") == {q: [tuple(h) for h in hits]
                                                       for q, hits in ours.batch_search(vectors, k=10).items() if hits}


def test_the_pyserini_runner_names_what_is_wrong():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args, message in ((["numpy"], "is not a pyserini module"), ([], "name the pyserini module"),
                          (["pyserini.no_such_tool"], "pyserini has no module")):
        done = subprocess.run([sys.executable, "-m", "laconic_pyserini.pyserini", *args], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
