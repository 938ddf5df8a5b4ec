"""What a person at a terminal sees from ``python -m laconic_pyserini.index``: a bar on Anserini's own
document counter, the log's path, and no Anserini ``INFO`` line or JVM warning on the console; the index folder's
``logs/index.log`` holds them. Real Anserini on 60 real SciFact documents (BM25, and impact over splade-tiny)."""

from __future__ import annotations

import json
import os
import re

from conftest import REPO
from terminal import run_in_terminal, scifact_subset

NOISE = ("INFO  [", "WARNING:", "sun.misc.Unsafe", "Java 22 or later", "SLF4J", "IndexCollection settings")


def _env(models=None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if models is not None:
        env["LACONIC_MODELS"] = str(models)
    env.pop("LACONIC_PROGRESS", None)  # the terminal alone decides
    return env


def _assert_quiet_console_and_full_log(console: str, index, kind: str) -> None:
    bar = rf"index {index.name} \({kind}\): 100%\|.*\| 60/60 \[.*doc/s\]"
    assert re.search(bar, console), console
    assert f"log: {index / 'logs' / 'index.log'}" in console
    for noise in NOISE:
        assert noise not in console, (noise, console)
    log = (index / "logs" / "index.log").read_text(encoding="utf-8", errors="replace")
    assert "INFO  [main] index.IndexCollection" in log and "Indexing Complete! 60 documents indexed" in log
    assert json.loads((index / "manifest.json").read_text())["documents"] == 60


def test_bm25_index_in_a_terminal_shows_a_bar_and_keeps_anserini_in_the_log(tmp_path, data_root):
    dataset = tmp_path / "scifact-60"
    scifact_subset(data_root / "scifact", dataset)
    index = tmp_path / "bm25-60"
    rc, console = run_in_terminal(["laconic_pyserini.index", "--bm25", "--input", str(dataset),
                                    "--index", str(index)], _env())
    assert rc == 0, console
    _assert_quiet_console_and_full_log(console, index, "BM25")
    # The log inside the folder does not disturb Lucene: the index searches as any other.
    from laconic_pyserini.searchers.bm25 import Bm25Searcher

    hits = Bm25Searcher(index).batch_search({"q": "vitamin D deficiency"}, k=5)["q"]
    assert len(hits) == 5
    # Rebuilding over its own index (logs folder included) is still allowed, and the log starts afresh.
    rc, console = run_in_terminal(["laconic_pyserini.index", "--bm25", "--input", str(dataset),
                                    "--index", str(index)], _env())
    assert rc == 0, console
    log = (index / "logs" / "index.log").read_text(encoding="utf-8", errors="replace")
    assert log.count("Indexing Complete! 60 documents indexed") == 1


def test_impact_index_in_a_terminal_shows_a_bar_and_keeps_anserini_in_the_log(tmp_path, data_root,
                                                                              splade_tiny_dir):
    from laconic_pyserini.encode import encode_corpus

    dataset = tmp_path / "scifact-60"
    scifact_subset(data_root / "scifact", dataset)
    encoded = tmp_path / "encoded"
    encode_corpus(dataset, encoded, str(splade_tiny_dir), batch_size=32, progress=False)
    index = tmp_path / "impact-60"
    rc, console = run_in_terminal(["laconic_pyserini.index", "--input", str(encoded), "--index", str(index)],
                                   _env(splade_tiny_dir.parent))
    assert rc == 0, console
    _assert_quiet_console_and_full_log(console, index, "impact")
