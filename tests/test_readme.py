"""Every ```python block of README.md runs, in order, in one namespace (as a notebook would), from a folder that
holds what the snippets name: ``indexes/scifact.splade-tiny`` (the impact index of the first 200 SciFact
documents) and ``st/splade-tiny`` (splade-tiny exported for sentence-transformers)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def python_blocks() -> list[str]:
    return BLOCK.findall((REPO / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_its_python_section_in_pyserinis_order():
    blocks = python_blocks()
    firsts = [next(i for i, block in enumerate(blocks) if needle in block) for needle in (
        "open_searcher(", "for i in range(len(hits))", "searcher.doc(", "batch_search(", "load_encoder(",
        "LuceneImpactSearcher(", "open_sparse_encoder(")]
    assert firsts == sorted(firsts)


def test_every_readme_python_snippet_runs(splade200, tmp_path):
    from laconic_pyserini.integrations import export_sentence_transformers

    (tmp_path / "indexes").mkdir()
    (tmp_path / "indexes" / "scifact.splade-tiny").symlink_to(splade200["index"])
    export_sentence_transformers("splade-tiny", tmp_path / "st" / "splade-tiny")
    blocks = python_blocks()
    # One process, the blocks in order; each block's end prints a marker so a failure names its block.
    program = "\n".join(f"{block}\nprint({json.dumps(f'--- block {n} done')})" for n, block in enumerate(blocks))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    finished = done.stdout.count("--- block ")
    assert done.returncode == 0, f"README python block {finished} failed:\n{blocks[finished]}\n{done.stderr[-3000:]}"
    assert finished == len(blocks) >= 7
    # The printed hits are the searcher's: the first line of the loop is the top hit.
    from laconic_pyserini import open_searcher

    with open_searcher(splade200["index"]) as searcher:
        top = searcher.search("does aspirin prevent heart attacks?")[0]
    assert f" 1 {top.docid:10} {top.score:.1f}" in done.stdout.splitlines()
