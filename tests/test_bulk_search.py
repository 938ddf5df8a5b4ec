"""Hits read out of Lucene in bulk are Anserini's own hits: same ids, same scores, same order, same run bytes.

The reference is the per-hit path each searcher keeps (Anserini's ``search``/``batch_search`` through pyserini,
every ``ScoredDoc`` read one by one): what the toolkit returned before hits came out in bulk. Every SciFact test
query is compared at depth 1,000, on the session's shared BM25 index and splade-tiny impact index.
"""

from __future__ import annotations

import pytest

from conftest import model_dir
from laconic_pyserini.topics import load_topics
from laconic_pyserini.run import write_trec_run
from laconic_pyserini.search import main as search_main

pytestmark = pytest.mark.slow

SCIFACT_TEST_QUERIES = 300  # BEIR SciFact's judged test queries


@pytest.fixture(scope="module")
def topics(data_root):
    found = load_topics(data_root / "scifact", "test")
    assert len(found) == SCIFACT_TEST_QUERIES
    return found


@pytest.fixture(scope="module")
def bm25(bm25_index):
    from laconic_pyserini.searchers.bm25 import Bm25Searcher

    return Bm25Searcher(bm25_index("scifact"))


@pytest.fixture(scope="module")
def impact(encoded):
    model_dir("splade-tiny")
    from laconic_pyserini.searchers.impact import LaconicSearcher

    return LaconicSearcher(encoded("splade-tiny", "scifact")["index"])


@pytest.fixture(scope="module")
def impact_vectors(impact, topics):
    return impact.queries.vectors(topics)


def _assert_same_hits(bulk, per_hit, qid):
    assert [d for d, _ in bulk] == [d for d, _ in per_hit], qid  # ids in the same order (ties included)
    assert [s for _, s in bulk] == [s for _, s in per_hit], qid  # exactly the same floats


def test_bm25_bulk_hits_are_anserinis_for_every_scifact_query(bm25, topics):
    deep = 0
    for qid, text in topics.items():
        for k in (10, 1000):
            bulk, per_hit = bm25.search(text, k), bm25.search_per_hit(text, k)
            _assert_same_hits(bulk, per_hit, qid)
        deep += len(bulk) == 1000
    assert deep > 250  # most queries fill 1,000 hits: the deep tail (and its ties) is really compared


def test_impact_bulk_hits_are_anserinis_for_every_scifact_query(impact, impact_vectors):
    deep = 0
    for qid, vector in impact_vectors.items():
        for k in (10, 1000):
            bulk, per_hit = impact.search_vector(vector, k), impact.search_vector_per_hit(vector, k)
            _assert_same_hits(bulk, per_hit, qid)
        deep += len(bulk) == 1000
    assert deep > 250


def test_threaded_batches_equal_the_per_hit_batches(bm25, impact, topics, impact_vectors):
    bm25_run = bm25.batch_search(topics, 1000, threads=2)
    assert list(bm25_run) == list(topics)
    assert bm25_run == bm25.batch_search_per_hit(topics, 1000, threads=2)
    impact_run = impact.batch_search_vectors(impact_vectors, 1000, threads=2)
    assert list(impact_run) == list(impact_vectors)
    assert impact_run == impact.batch_search_vectors_per_hit(impact_vectors, 1000, threads=2)


def test_tie_adjustment_matches_anserinis_reranker(bm25, topics):
    """adjust_ties against Anserini's ScoreTiesAdjusterReranker run in Java on the same ScoredDocs."""
    from jnius import autoclass

    from laconic_pyserini.searchers.lucene import adjust_ties

    scored_docs = autoclass("io.anserini.search.ScoredDocs")
    reranker = autoclass("io.anserini.rerank.lib.ScoreTiesAdjusterReranker")()
    bulk = bm25.bulk
    near_ties = 0
    for text in list(topics.values())[:40]:
        docs = scored_docs.fromTopDocs(bulk.searcher.search(bulk.text_query(text), 1000, bulk.sort, True),
                                       bulk.searcher)
        raw = [float(s) for s in docs.scores]
        reranker.rerank(docs, None)
        assert adjust_ties(raw) == [float(s) for s in docs.scores], text
        near_ties += sum(abs(a - b) <= 1e-4 for a, b in zip(raw, raw[1:]))
    assert near_ties > 0  # the 1e-6 steps between near ties were exercised, not only the rounding


@pytest.mark.parametrize("kind", ["bm25", "impact"])
def test_cli_run_is_byte_identical_to_the_per_hit_run(kind, bm25, impact, bm25_index, encoded, topics,
                                                      impact_vectors, tmp_path):
    if kind == "bm25":
        index, reference = bm25_index("scifact"), bm25.batch_search_per_hit(topics, 1000, threads=1)
    else:
        index = encoded("splade-tiny", "scifact")["index"]
        reference = impact.batch_search_vectors_per_hit(impact_vectors, 1000, threads=1)
    expected = write_trec_run(reference, tmp_path / "per-hit.run")
    for threads in (1, 2):
        out = tmp_path / f"cli.{threads}.run"
        assert search_main(["--index", str(index), "--topics", "scifact", "--output", str(out), "--hits", "1000",
                            "--threads", str(threads)]) == 0
        assert out.read_bytes() == expected.read_bytes(), (kind, threads)
    assert len(expected.read_bytes().splitlines()) > 250 * 1000


def test_impact_query_map_goes_in_as_json_terms_and_all(impact):
    """Terms JSON must escape (quotes, backslashes, non-ASCII) reach Lucene as a per-term Java map gives them."""
    from jnius import autoclass

    awkward = {'"quoted"': 3, "back\\slash": 2, "Ġcafé": 5, "日本": 7, "##ing": 1}
    per_term = autoclass("java.util.HashMap")()
    for term, weight in awkward.items():
        per_term.put(term, autoclass("java.lang.Float")(float(weight)))
    expected = impact.bulk.generator.buildQuery("contents", per_term).toString()
    got = impact.bulk.weighted_query(awkward).toString()
    assert sorted(got.split(" ")) == sorted(expected.split(" ")) and len(got.split(" ")) == len(awkward)


def test_vocabulary_read_in_one_call_is_pyserinis_idf_terms(impact):
    """The query-term filter's vocabulary (one Jackson call) holds exactly the terms pyserini's idf table is keyed by."""
    assert isinstance(impact.vocabulary, frozenset) and len(impact.vocabulary) > 5000
    assert impact.vocabulary == frozenset(impact.lucene.idf)


#: Run in a fresh interpreter: the search CLI, then which heavy modules it imported.
_CLI_IMPORTS = """
import sys
from laconic_pyserini.search import main
code = main(sys.argv[1:])
heavy = sorted(name for name in ("torch", "transformers", "pyserini.search", "pyserini.encode") if name in sys.modules)
print("heavy:", heavy)
sys.exit(code)
"""


@pytest.mark.parametrize("kind", ["bm25", "impact"])
def test_cli_without_query_encoding_imports_no_torch_and_writes_the_per_hit_run(kind, bm25, impact, bm25_index,
                                                                               encoded, data_root, topics,
                                                                               impact_vectors, tmp_path):
    """BM25 texts and pre-encoded impact vectors need no model: the CLI must not import torch (nor pyserini's search
    package, which imports it), and its run is still byte for byte the per-hit path's."""
    import subprocess
    import sys

    if kind == "bm25":
        argv = ["--index", str(bm25_index("scifact")), "--topics", str(data_root / "scifact")]
        reference = bm25.batch_search_per_hit(topics, 1000, threads=1)
    else:
        queries = tmp_path / "queries.tsv"
        queries.write_text("".join(f"{qid}\t{' '.join(t for t, w in v.items() for _ in range(w))}\n"
                                   for qid, v in impact_vectors.items()), encoding="utf-8")
        argv = ["--index", str(encoded("splade-tiny", "scifact")["index"]), "--pre-encoded", str(queries)]
        reference = impact.batch_search_vectors_per_hit(impact_vectors, 1000, threads=1)
    out = tmp_path / "cli.run"
    done = subprocess.run([sys.executable, "-c", _CLI_IMPORTS, *argv, "--output", str(out), "--hits", "1000"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "heavy: []" in done.stdout, done.stdout
    assert out.read_bytes() == write_trec_run(reference, tmp_path / "per-hit.run").read_bytes()


def test_impact_hit_pairs_are_lucenes_score_docs(impact, impact_vectors):
    """The [[doc, score], ...] Jackson writes (and numpy parses) are Lucene's ScoreDocs, read one by one."""
    from laconic_pyserini.searchers.queries import scorable_terms

    bulk = impact.bulk
    for vector in list(impact_vectors.values())[:20]:
        query = bulk.weighted_query(scorable_terms(vector, impact.vocabulary))
        docs, scores = bulk._unsorted(query, 1000)
        expected = [(hit.doc, hit.score) for hit in bulk.searcher.search(query, 1000).scoreDocs]
        assert len(expected) > 100
        assert list(zip(docs.tolist(), scores.tolist())) == expected


def test_impact_ties_running_past_the_overfetch_are_anserinis(impact):
    """One frequent term at weight 1: every score is a small impact, so runs of ties are long; fetching a single hit
    past k at first, the bulk path must fetch again (and again) until it has every hit tied with the k-th."""
    from collections import Counter

    frequent = sorted(impact.lucene.idf, key=impact.lucene.idf.get)[:3]
    refetched = 0
    for term in frequent:
        deep = impact.search_vector_per_hit({term: 1}, 5000)
        # Anserini's tie adjustment lowers each tie by 1e-6 × its place: rounding gives the impact back.
        impacts = [round(score) for _, score in deep]
        commonest = Counter(impacts).most_common(1)[0][0]
        query = impact.bulk.weighted_query({term: 1})
        for k in (1, 10, 100, 1000, impacts.index(commonest) + 1, len(deep)):
            per_hit = impact.search_vector_per_hit({term: 1}, k)
            _assert_same_hits(impact.search_vector({term: 1}, k), per_hit, (term, k))
            _assert_same_hits(impact.bulk.top_integer(query, k, extra=1), per_hit, (term, k))
            refetched += k + 1 < len(impacts) and impacts[k - 1] == impacts[k] == impacts[k + 1]
    assert refetched >= len(frequent)  # the fetch-again path really ran (ties beyond the one extra hit)
