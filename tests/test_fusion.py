"""Run fusion (``fusion``, ``fuse``) and fused searchers (``open_searcher`` on several indexes, ``search``).

The runs are real: BM25, splade-tiny (Lucene impact) and all-MiniLM-L6-v2 (faiss flat) on SciFact, the session's
shared indexes, searched for the first 60 test queries. The reference is pyserini 1.6's own
``python -m pyserini.fusion`` in a subprocess, compared byte for byte, and an independent RRF in exact rationals.
"""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import REPO

QUERIES = 60
DEPTH = 100  # hits per part run; fusion considers --depth of them


@pytest.fixture(scope="module")
def part_indexes(data_root, bm25_index, encoded) -> dict[str, Path]:
    return {"bm25": bm25_index("scifact"), "splade": encoded("splade-tiny", "scifact")["index"],
            "minilm": encoded("minilm", "scifact")["index"]}


@pytest.fixture(scope="module")
def topics(data_root) -> dict[str, str]:
    from laconic_pyserini.topics import load_topics

    return dict(list(load_topics(data_root / "scifact", "test").items())[:QUERIES])


@pytest.fixture(scope="module")
def part_runs(part_indexes, topics) -> dict[str, dict]:
    from laconic_pyserini.searchers import open_searcher

    return {name: open_searcher(index).batch_search(topics, DEPTH) for name, index in part_indexes.items()}


@pytest.fixture(scope="module")
def run_files(tmp_path_factory, part_runs) -> dict[str, Path]:
    """The part runs as `search` writes them (6 decimals), and the same with non-numeric query ids."""
    from laconic_pyserini.run import write_trec_run

    folder = tmp_path_factory.mktemp("fusion-runs")
    files = {}
    for name, run in part_runs.items():
        files[name] = write_trec_run(run, folder / f"{name}.trec")
        files[f"q-{name}"] = write_trec_run({f"q{qid}": hits for qid, hits in run.items()}, folder / f"q-{name}.trec")
    return files


def _pyserini_fusion(runs: list[Path], output: Path, *options: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "pyserini.fusion", "--runs", *map(str, runs), "--output", str(output),
                    *options], check=True, env=env, capture_output=True, timeout=120)
    return output.read_text(encoding="utf-8")


CASES = {  # name: (parts, fuse options); every case also runs with query ids that are not numbers
    "rrf": (["bm25", "splade", "minilm"], ["--method", "rrf"]),
    "rrf-depth-k": (["splade", "bm25"], ["--method", "rrf", "--rrf.k", "10", "--depth", "30", "--k", "20"]),
    "interpolation": (["splade", "minilm"], ["--method", "interpolation", "--alpha", "0.3"]),
    "average": (["bm25", "splade", "minilm"], ["--method", "average", "--depth", "50"]),
    "normalize": (["bm25", "splade", "minilm"], ["--method", "normalize", "--k", "30"]),
}


@pytest.mark.parametrize("ids", ["numeric", "text"])
@pytest.mark.parametrize("case", list(CASES))
def test_fuse_equals_pyserini_fusion(case, ids, run_files, tmp_path):
    from laconic_pyserini.fuse import main

    parts, options = CASES[case]
    runs = [run_files[part if ids == "numeric" else f"q-{part}"] for part in parts]
    want = _pyserini_fusion(runs, tmp_path / "pyserini.trec", *options)
    assert main(["--runs", *map(str, runs), "--output", str(tmp_path / "ours.trec"), "--runtag", "pyserini.fusion",
                 *options]) == 0
    got = (tmp_path / "ours.trec").read_text(encoding="utf-8")
    assert len(got.splitlines()) >= QUERIES * 20
    assert got == want


def _independent_rrf(runs: list[dict], rrf_k: int, depth: int, k: int) -> dict[str, list[tuple[str, Fraction]]]:
    """RRF in exact rationals: 1 / (rrf_k + rank) summed over the runs' first ``depth`` hits, ties by doc id."""
    scores: dict[str, dict[str, Fraction]] = {}
    for run in runs:
        for qid, hits in run.items():
            for rank, (doc, _) in enumerate(hits[:depth], start=1):
                scores.setdefault(qid, {}).setdefault(doc, Fraction(0))
                scores[qid][doc] += Fraction(1, rrf_k + rank)
    return {qid: sorted(docs.items(), key=lambda hit: (-hit[1], hit[0]))[:k] for qid, docs in scores.items()}


def test_rrf_equals_an_independent_rrf(run_files, tmp_path):
    from laconic_pyserini.fuse import main
    from laconic_pyserini.run import read_trec_run

    runs = [run_files[name] for name in ("bm25", "splade", "minilm")]
    assert main(["--runs", *map(str, runs), "--output", str(tmp_path / "rrf.trec"), "--depth", "40", "--k", "25"]) == 0
    got = read_trec_run(tmp_path / "rrf.trec")
    want = _independent_rrf([read_trec_run(path) for path in runs], 60, 40, 25)
    assert got.keys() == want.keys()
    for qid, hits in want.items():
        assert [doc for doc, _ in got[qid]] == [doc for doc, _ in hits], qid
        assert [score for _, score in got[qid]] == pytest.approx([float(score) for _, score in hits], rel=1e-15)


@pytest.mark.parametrize("settings", [("rrf", ["bm25", "splade", "minilm"], 50),
                                      ("interpolation", ["splade", "minilm"], 40),
                                      ("average", ["bm25", "minilm"], None)])
def test_fused_searcher_equals_fuse_of_its_parts(settings, part_indexes, part_runs, topics):
    from laconic_pyserini.fusion import FusionSettings, fuse
    from laconic_pyserini.searchers import open_searcher

    method, parts, depth = settings
    fusion = FusionSettings(method, alpha=0.7, depth=depth)
    with_k = 20
    searcher = open_searcher([part_indexes[name] for name in parts], fusion=fusion)
    try:
        # threads=1, as the parts' runs were searched: faiss's float32 inner products round differently on
        # another thread count (the parts still search at once, each in a thread of its own)
        got = searcher.batch_search(topics, with_k, threads=1)
        one_by_one = {qid: searcher.search_encoded(searcher.encode_query(text), with_k)
                      for qid, text in list(topics.items())[:5]}
    finally:
        searcher.close()
    cut = depth or with_k
    want = fuse([{qid: hits[:cut] for qid, hits in part_runs[name].items()} for name in parts],
                FusionSettings(method, alpha=0.7, depth=depth, k=with_k))
    assert list(got) == list(topics)
    if method == "rrf":  # ranks only: exactly equal
        assert got == want
    else:
        # Scores: a dense part's query embedding can differ in its last float32 bit between two encodings of the
        # same query in one process (measured: ~1e-8 relative in all-MiniLM-L6-v2's scores), which RRF absorbs.
        for qid, hits in want.items():
            assert [doc for doc, _ in got[qid]] == [doc for doc, _ in hits], qid
            assert [score for _, score in got[qid]] == pytest.approx([score for _, score in hits], rel=1e-6), qid
    assert {qid: [doc for doc, _ in one_by_one[qid]] for qid in one_by_one} == {
        qid: [doc for doc, _ in got[qid]] for qid in one_by_one}
    assert searcher.encodes_queries


def test_search_cli_fuses_several_indexes(part_indexes, part_runs, topics, tmp_path):
    from laconic_pyserini.fusion import FusionSettings, fuse
    from laconic_pyserini.run import read_trec_run
    from laconic_pyserini.search import main

    (tmp_path / "topics.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in topics.items()), encoding="utf-8")
    output = tmp_path / "fused.trec"
    assert main(["--index", str(part_indexes["bm25"]), "--index", str(part_indexes["splade"]), "--topics",
                 str(tmp_path / "topics.tsv"), "--fusion", "rrf", "--rrf.k", "20", "--depth", str(DEPTH),
                 "--hits", "10", "--output", str(output)]) == 0
    want = fuse([part_runs["bm25"], part_runs["splade"]], FusionSettings("rrf", rrf_k=20, depth=DEPTH, k=10))
    got = read_trec_run(output)
    assert {q: [d for d, _ in hits] for q, hits in got.items()} == {q: [d for d, _ in hits] for q, hits in want.items()}
    assert '"rrf_k": 20' in Path(f"{output}.manifest.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("argv, message", [
    (["fuse", "--runs", "{bm25}", "--output", "{out}"], "number of --runs 1: must be at least 2"),
    (["fuse", "--runs", "{bm25}", "{splade}", "{minilm}", "--method", "interpolation", "--output", "{out}"],
     "interpolation fuses exactly 2 runs, got 3"),
    (["fuse", "--runs", "{bm25}", "{splade}", "--output", "{bm25}"], "--output"),
    (["fuse", "--runs", "{bm25}", "{unranked}", "--output", "{out}"], "is not 1, its position in the file"),
    (["search", "--index", "{bm25_index}", "--topics", "scifact", "--rrf.k", "10", "--output", "{out}"],
     "--rrf.k: fusion options need two or more --index"),
])
def test_fusion_bad_input_is_one_clear_error(argv, message, run_files, part_indexes, tmp_path):
    unranked = tmp_path / "unranked.trec"
    unranked.write_text("1 Q0 a 2 3.0 x\n1 Q0 b 1 2.0 x\n", encoding="utf-8")
    names = {**{k: str(v) for k, v in run_files.items()}, "out": str(tmp_path / "out.trec"),
             "unranked": str(unranked), "bm25_index": str(part_indexes["bm25"])}
    before = Path(run_files["bm25"]).read_bytes()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", f"laconic_pyserini.{argv[0]}", *[a.format(**names) for a in argv[1:]]],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert not (tmp_path / "out.trec").exists()
    assert Path(run_files["bm25"]).read_bytes() == before


def test_compare_hybrid_is_the_fusion_of_its_parts_and_costs_their_sum(tmp_path, data_root):
    """``compare`` with a hybrid on a small real SciFact slice (20 queries, their judged documents and 150 others):
    the parts are measured too, the hybrid's run is ``fuse`` over theirs, its latency and memory their sums."""
    import json

    from test_dense import _beir_subset

    from laconic_pyserini.compare import compare
    from laconic_pyserini.eval import DEFAULT_MEASURES, evaluate
    from laconic_pyserini.fuse import fuse_run_files
    from laconic_pyserini.fusion import FusionSettings
    from laconic_pyserini.run import read_trec_run
    from laconic_pyserini.topics import load_qrels

    dataset = _beir_subset(data_root / "scifact", tmp_path / "scifact-slice", queries=20, extra_docs=150)
    result = compare(dataset, ["hybrid:bm25+sparse:splade-tiny"], tmp_path / "report", hits=100)
    rows = {row["name"]: row for row in result["systems"]}
    assert list(rows) == ["bm25", "sparse:splade-tiny", "hybrid:bm25+sparse:splade-tiny"]
    hybrid, parts = rows["hybrid:bm25+sparse:splade-tiny"], [rows["bm25"], rows["sparse:splade-tiny"]]
    fused = fuse_run_files([part["run"] for part in parts], tmp_path / "fused.trec", FusionSettings(k=100),
                           tag="laconic")
    assert Path(hybrid["run"]).read_text(encoding="utf-8") == fused.read_text(encoding="utf-8")
    want = evaluate(load_qrels(dataset, "test"), read_trec_run(fused), DEFAULT_MEASURES)
    assert hybrid["metrics"] == {m: round(v, 4) for m, v in want.items()}
    for key in ("index_bytes", "serving_rss_bytes", "serving_rss_loaded_bytes"):
        assert hybrid[key] == sum(part[key] for part in parts)
    latency = hybrid["query_latency_ms"]
    assert latency["encode_p50"] >= max(part["query_latency_ms"]["encode_p50"] for part in parts)
    assert latency["total_p95"] > max(part["query_latency_ms"]["total_p95"] for part in parts)
    report = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert report["systems"][2]["parts"] == ["bm25", "sparse:splade-tiny"]
    assert "hybrid:bm25+sparse:splade-tiny" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
