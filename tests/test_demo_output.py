"""What a newcomer sees in the terminal when the demo's ``compare`` runs: one line per stage, progress
bars with rate, no Anserini ``INFO`` line or JVM warning on the console (they are in the run's log file), no false
tokenizer warning, and at the end the table, where the reports are and the total time.

The demo's command runs for real (Anserini, splade-tiny) on 60 real SciFact documents, under a pseudo-terminal so
that it behaves as it does for a person at a terminal.
"""

from __future__ import annotations

import json
import os
import re
import sys

from conftest import REPO
from terminal import run_in_terminal, scifact_subset


def test_compare_in_a_terminal_says_its_stages_and_keeps_java_in_the_log(tmp_path, data_root, splade_tiny_dir):
    dataset = tmp_path / "scifact-60"
    scifact_subset(data_root / "scifact", dataset)
    output = tmp_path / "report"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               LACONIC_MODELS=str(splade_tiny_dir.parent))
    env.pop("LACONIC_PROGRESS", None)  # the terminal alone decides
    rc, console = run_in_terminal(["laconic_pyserini.compare", "--dataset", str(dataset), "--output", str(output),
                                    "--system", "bm25", "--system", "sparse:rasyosef/splade-tiny"], env)
    assert rc == 0, console
    lines = [line.strip() for line in re.split(r"[\r\n]+", console) if line.strip()]

    stages = [line for line in lines if line.startswith("[")]
    expected = ["[1/2] bm25 — index 60 docs", "[1/2] bm25 — serve 8 queries", "[1/2] bm25 — evaluate: nDCG@10 ",
                "[2/2] sparse:splade-tiny — encode 60 docs", "[2/2] sparse:splade-tiny — index 60 docs",
                "[2/2] sparse:splade-tiny — serve 8 queries", "[2/2] sparse:splade-tiny — evaluate: nDCG@10 "]
    assert len(stages) == len(expected) and all(s.startswith(e) for s, e in zip(stages, expected)), stages
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    for stage, row in zip((stages[2], stages[6]), report["systems"]):
        assert f"nDCG@10 {row['metrics']['nDCG@10']:.4f}" in stage  # the line says the number the report holds

    # Progress bars with a rate: the sparse encoding (documents) and both servings (queries).
    assert re.search(r"encode splade-tiny: 100%\|.*\| 60/60 \[.*doc/s\]", console), console
    assert len(re.findall(r"serve: 100%\|.*\| 8/8 \[.*query/s\]", console)) == 2, console

    # Java and library chatter stays off the console; the log holds it.
    for noise in ("INFO  [", "WARNING:", "sun.misc.Unsafe", "Java 22 or later", "SLF4J", "Token indices sequence"):
        assert noise not in console, noise
    log = (output / "logs" / "compare.log").read_text(encoding="utf-8", errors="replace")
    assert "INFO  [main] index.AbstractIndexer" in log
    assert log.count("Indexing Complete! 60 documents indexed") == 2
    assert "Token indices sequence" not in log  # not hidden: never raised

    # The end: the table with the report's columns, where the reports are, the total time.
    header = next(line for line in lines if line.startswith("| System |"))
    assert header.startswith("| System | nDCG@10 | R@100 | R@1000 | Index MB | Serving RSS MB")
    assert f"report: {output / 'report.md'} and {output / 'report.png'}" in console
    assert f"log:    {output / 'logs' / 'compare.log'}" in console
    assert re.search(r"^total: +(\d+ min )?\d+ s$", lines[-1]), lines[-1]


def test_progress_follows_the_terminal_unless_the_environment_says(monkeypatch):
    from laconic_pyserini.console import PROGRESS_ENV, progress_enabled

    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert progress_enabled() is sys.stderr.isatty()  # under pytest: a capture, not a terminal
    monkeypatch.setenv(PROGRESS_ENV, "1")
    assert progress_enabled() is True
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert progress_enabled() is False


def test_captured_output_goes_to_the_log_and_a_warning_that_matters_once_to_the_console(tmp_path, capfd):
    from laconic_pyserini.console import captured, say

    log = tmp_path / "logs" / "run.log"
    info = "2026-01-01 10:00:00,000 INFO  [main] index.AbstractIndexer (AbstractIndexer.java:252) - Starting\n"
    warn = ("2026-01-01 10:00:01,000 WARN  [pool-2-thread-1] index.IndexCollection (IndexCollection.java:1) - "
            "Unexpected file type: part-1.txt\n")
    noise = "WARNING: sun.misc.Unsafe::invokeCleaner will be removed in a future release\n"
    for _ in range(2):
        with captured(log):
            os.write(1, info.encode())
            os.write(2, (warn + noise).encode())
            say("[1/1] stage line")
    out, err = capfd.readouterr()
    assert "INFO" not in out + err and "sun.misc" not in out + err
    assert err.count("[1/1] stage line") == 2
    assert err.count(f"warning: Unexpected file type: part-1.txt (details in {log})") == 1
    assert log.read_text(encoding="utf-8") == (info + warn + noise) * 2


def test_report_picture_names_every_system_in_a_legend_clear_of_the_points():
    """Two systems on one spot (flat and HNSW over the same vectors) stay told apart: no label beside a point can
    cover another point or label, because names live in a legend below the panels."""
    import matplotlib.pyplot as plt

    from laconic_pyserini.report import MB, draw

    def row(name, kind, ndcg, index_mb, rss_mb, encode_ms, search_ms):
        return {"name": name, "kind": kind, "metrics": {"nDCG@10": ndcg}, "index_bytes": index_mb * MB,
                "serving_rss_bytes": rss_mb * MB,
                "query_latency_ms": {"encode_p50": encode_ms, "search_p50": search_ms}}

    systems = [row("bm25", "bm25", 0.679, 10.1, 830, 0.0, 48.0),
               row("sparse:splade-tiny", "sparse", 0.644, 2.8, 969, 13.7, 26.1),
               row("dense:minilm", "dense", 0.645, 7.6, 545, 21.8, 1.2),
               row("dense-hnsw:minilm", "dense", 0.645, 7.6, 545, 21.8, 1.2)]  # the same spot as flat
    fig = draw({"dataset": "scifact", "split": "test", "systems": systems})
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        assert all(not ax.texts for ax in fig.axes)  # no label beside a point
        (legend,) = fig.legends
        assert [t.get_text() for t in legend.get_texts()] == [s["name"] for s in systems]
        markers = {h.get_paths()[0].vertices.tobytes() for h in legend.legend_handles}
        assert len(markers) == len(systems)  # one shape per system: coinciding points stay distinguishable
        box = legend.get_window_extent(renderer)
        assert all(not box.overlaps(ax.get_tightbbox(renderer)) for ax in fig.axes)
    finally:
        plt.close(fig)


def test_the_readme_demo_table_has_the_columns_compare_prints():
    from laconic_pyserini.report import render_markdown

    printed = render_markdown({"dataset": "scifact", "split": "test", "queries": 300, "hits": 1000,
                               "serve_hits": 10, "systems": []})
    header = next(line for line in printed.splitlines() if line.startswith("| System |"))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What `make demo` shows", 1)[1].split("\n## ", 1)[0]
    tables = [line for line in section.splitlines() if line.startswith("| System |")]
    assert tables == [header]
    widths = {line.count("|") for line in section.splitlines() if line.startswith("| ")}
    assert widths == {header.count("|")}  # every row has a cell per column
