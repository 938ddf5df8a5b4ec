"""index_recipes/: every recipe loads and promises the right corpus size; a recipe runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, model_dir

RECIPES = sorted((REPO / "index_recipes").glob("*.yaml"))
BEIR = ["arguana", "climate-fever", "dbpedia-entity", "fever", "fiqa", "hotpotqa", "msmarco", "nfcorpus", "nq",
        "quora", "scidocs", "scifact", "trec-covid", "webis-touche2020"] + \
    [f"cqadupstack-{s}" for s in ("android", "english", "gaming", "gis", "mathematica", "physics", "programmers",
                                   "stats", "tex", "unix", "webmasters", "wordpress")]


def test_every_recipe_loads_and_names_a_shipped_encoder():
    from laconic_pyserini.index.recipe import load_recipe
    from laconic_pyserini.spec import known_specs

    specs = known_specs()
    names = set()
    for path in RECIPES:
        recipe = load_recipe(path)
        assert recipe["encoder"] in specs, path
        assert path.name == f"{recipe['name']}.yaml" and recipe["name"].endswith("." + recipe["encoder"])
        names.add(recipe["name"])
        if "quora" in recipe["dataset"] or "cqadupstack" in recipe["dataset"]:
            assert recipe["encode"]["docs_as_queries"] is True, path
    for size in ("1b", "3b", "8b"):
        assert {f"{d}.laconic-{size}" for d in BEIR} <= names
    assert {"scifact.splade-tiny", "nfcorpus.splade-tiny"} <= names


def test_local_recipes_promise_the_local_corpus_size(data_root):
    """The counts written in the recipes equal the corpora on disk (counted here, not copied)."""
    from laconic_pyserini.data import count_corpus
    from laconic_pyserini.index.recipe import load_recipe

    for dataset in ("scifact", "nfcorpus"):
        corpus = count_corpus(data_root / dataset)
        for path in REPO.glob(f"index_recipes/{dataset}.*.yaml"):
            assert load_recipe(path)["documents"] == corpus, path


def test_bad_recipes_are_refused(tmp_path):
    from laconic_pyserini.index.recipe import RecipeError, load_recipe

    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: scifact\nencoder: splade-tiny\ndocuments: 5183\nencode: {batchsize: 8}\n")
    with pytest.raises(RecipeError, match="unknown option.*batchsize"):
        load_recipe(bad)
    bad.write_text("dataset: scifact\nencoder: splade-tiny\n")
    with pytest.raises(RecipeError, match="documents must be"):
        load_recipe(bad)


def test_a_recipe_runs_end_to_end_and_checks_the_count(tmp_path):
    model_dir("splade-tiny")
    from laconic_pyserini.index.__main__ import main as index_main
    from laconic_pyserini.index.lucene import lucene_document_count

    corpus = tmp_path / "tiny" / "corpus.jsonl"
    corpus.parent.mkdir()
    texts = ["aspirin lowers the risk of heart attack", "", "statins and cholesterol"]
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                              for i, t in enumerate(texts)))
    recipe = tmp_path / "tiny.splade-tiny.yaml"
    recipe.write_text(f"dataset: {corpus.parent}\nencoder: splade-tiny\ndocuments: 3\nencode: {{batch_size: 2}}\n")
    work = tmp_path / "work"
    assert index_main(["--recipe", str(recipe), "--work", str(work)]) == 0
    index_dir = work / "indexes" / "tiny.splade-tiny"
    # The empty document is indexed too: the count is the corpus size.
    assert lucene_document_count(index_dir) == 3
    # A rerun keeps the index; a recipe that promises another count fails loudly.
    stamp = (index_dir / "manifest.json").stat().st_mtime_ns
    assert index_main(["--recipe", str(recipe), "--work", str(work)]) == 0
    assert (index_dir / "manifest.json").stat().st_mtime_ns == stamp
    wrong = tmp_path / "wrong.splade-tiny.yaml"
    wrong.write_text(recipe.read_text().replace("documents: 3", "documents: 4"))
    assert index_main(["--recipe", str(wrong), "--work", str(work)]) == 2
    assert not Path(work / "indexes" / "wrong.splade-tiny").exists()
