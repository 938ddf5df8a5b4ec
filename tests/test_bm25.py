"""BM25 through Anserini reproduces Anserini's published BEIR 2CR numbers (v1.0.0, -removeQuery, trec_eval -c).

Expected values are Anserini's, not ours: https://castorini.github.io/anserini/2cr/beir.html (also in
pyserini 1.6.0's own 2CR data), and ../shared/datasets/README.md.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from laconic_pyserini.topics import load_qrels, load_topics
from laconic_pyserini.eval import evaluate, evaluate_run_file
from laconic_pyserini.run import read_trec_run, write_trec_run
from laconic_pyserini.search import search_topics
from laconic_pyserini.searchers import open_searcher

ANSERINI_2CR = {
    ("scifact", "flat"): {"nDCG@10": 0.6789, "R@100": 0.9253, "R@1000": 0.9767},
    ("nfcorpus", "flat"): {"nDCG@10": 0.3218, "R@100": 0.2457, "R@1000": 0.3704},
    ("scifact", "multifield"): {"nDCG@10": 0.6647},
    ("nfcorpus", "multifield"): {"nDCG@10": 0.3254},
}


@pytest.mark.parametrize("dataset,fields", list(ANSERINI_2CR))
def test_bm25_reproduces_anserini_2cr(bm25_index, data_root, dataset, fields):
    searcher = open_searcher(bm25_index(dataset, fields))
    run = search_topics(searcher, load_topics(data_root / dataset, "test"), hits=1000, remove_query=True, threads=2)
    scores = evaluate(load_qrels(data_root / dataset, "test"), run, list(ANSERINI_2CR[dataset, fields]))
    for measure, expected in ANSERINI_2CR[dataset, fields].items():
        assert round(scores[measure], 4) == pytest.approx(expected, abs=1e-9), (measure, scores)


def test_cli_slice_as_a_user_runs_it(bm25_index, data_root, tmp_path):
    index = bm25_index("scifact", "flat")
    run_file = tmp_path / "run.scifact.txt"
    searched = subprocess.run([sys.executable, "-m", "laconic_pyserini.search", "--bm25", "--index", str(index),
                               "--topics", str(data_root / "scifact"), "--output", str(run_file), "--hits", "100",
                               "--remove-query", "--threads", "2"], check=True, capture_output=True, text=True,
                              timeout=600)
    # The console has our one summary line, not Lucene's "Java 22 or later" MMapDirectory warning (jvm.QUIET_LOGGERS).
    assert "MMapDirectory" not in searched.stderr and "WARNING" not in searched.stderr, searched.stderr
    run = read_trec_run(run_file)
    assert len(run) == 300 and max(len(hits) for hits in run.values()) == 100  # rare-term queries match fewer docs
    out = subprocess.run([sys.executable, "-m", "laconic_pyserini.eval", "--qrels", "scifact", "--run", str(run_file),
                          "-m", "nDCG@10", "R@100"], check=True, capture_output=True, text=True, timeout=300).stdout
    assert out.splitlines() == ["nDCG@10\t0.6789", "R@100\t0.9253"]


def test_remove_query_drops_self_hits_and_keeps_depth(bm25_index, data_root):
    # SciFact queries are claims, not documents: use document texts as queries so that self-hits exist.
    from laconic_pyserini.data import iter_corpus

    docs = [d for _, d in zip(range(20), iter_corpus(data_root / "scifact"))]
    queries = {d.id: d.contents for d in docs}
    searcher = open_searcher(bm25_index("scifact", "flat"))
    kept = search_topics(searcher, queries, hits=10, remove_query=False)
    removed = search_topics(searcher, queries, hits=10, remove_query=True)
    assert sum(kept[q][0][0] == q for q in queries) >= 18  # a document is its own best BM25 match
    for q in queries:
        assert q not in [d for d, _ in removed[q]] and len(removed[q]) == 10
        assert [h for h in kept[q] if h[0] != q] == removed[q][: len([h for h in kept[q] if h[0] != q])]


def test_eval_counts_unanswered_queries_as_zero(bm25_index, data_root, tmp_path):
    """trec_eval -c: dropping half the queries from a run halves the contribution, it does not vanish."""
    import pytrec_eval

    qrels = load_qrels(data_root / "scifact", "test")
    run = search_topics(open_searcher(bm25_index("scifact", "flat")), load_topics(data_root / "scifact"),
                        hits=100, remove_query=True)
    half = dict(list(run.items())[:150])
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(
        {q: {d: s for d, s in hits} for q, hits in half.items()})
    expected = sum(v["ndcg_cut_10"] for v in reference.values()) / len(qrels)
    assert evaluate(qrels, half, ["nDCG@10"])["nDCG@10"] == pytest.approx(expected, abs=1e-12)
    # The file-level helper the eval CLI calls reads the written run back to the same score.
    write_trec_run(half, tmp_path / "half.trec")
    assert evaluate_run_file(data_root / "scifact", tmp_path / "half.trec", measures=["nDCG@10"])["nDCG@10"] == \
        pytest.approx(expected, abs=1e-9)
