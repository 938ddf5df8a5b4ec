"""Index recipes, made from the reproduction recipes in eval/: every sparse / dense cell of BEIR gives one, the corpus
sizes promised are the corpora on disk, and a recipe builds a real index end to end (and fails on a wrong count)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, model_dir

BEIR_RECIPE = REPO / "eval" / "beir.yaml"
BEIR = ["arguana", "climate-fever", "dbpedia-entity", "fever", "fiqa", "hotpotqa", "nfcorpus", "nq",
        "quora", "scidocs", "scifact", "trec-covid", "webis-touche2020"] + \
    [f"cqadupstack-{s}" for s in ("android", "english", "gaming", "gis", "mathematica", "physics", "programmers",
                                   "stats", "tex", "unix", "webmasters", "wordpress")]


def test_every_beir_cell_with_a_shipped_encoder_gives_an_index_recipe():
    from laconic_pyserini.encode.source import resolve_docs_as_queries
    from laconic_pyserini.index.__main__ import index_recipe
    from laconic_pyserini.spec import known_specs

    specs = known_specs()
    for condition in ("splade-tiny", "laconic-1b", "laconic-3b", "laconic-8b", "minilm-dense"):
        for dataset in BEIR:
            recipe = index_recipe(BEIR_RECIPE, condition, dataset)
            assert recipe.encoder in specs and recipe.name == f"{dataset}.{condition}"
            assert recipe.documents > 0 and recipe.dataset.startswith("beir/")
            # BEIR Quora and CQADupStack documents are questions, known from the dataset's name alone.
            assert resolve_docs_as_queries(recipe.dataset) is dataset.startswith(("quora", "cqadupstack")), dataset
            # The condition's own encode command decides what is encoded (float weights: the one encoding its
            # Lucene and Seismic / Milvus cells share; LACONIC's max length 256), not defaults.
            if condition == "minilm-dense":
                assert recipe.spec == {} and "weights" not in recipe.encode
            else:
                assert recipe.encode["weights"] == "float" and recipe.encode["fields"] == ("title", "text")
                assert recipe.spec["max_length"] == (None if condition == "splade-tiny" else 256)


def test_cells_that_cannot_be_index_recipes_are_refused():
    from laconic_pyserini.index.__main__ import index_recipe
    from laconic_pyserini.recipe import RecipeError

    for condition in ("bm25-flat", "dense-1b"):  # BM25 encodes nothing; dense-1b waits for a --var checkpoint
        with pytest.raises(RecipeError, match="names no encoder"):
            index_recipe(BEIR_RECIPE, condition, "scifact")
    with pytest.raises(RecipeError, match="is a group"):
        index_recipe(BEIR_RECIPE, "splade-tiny", "cqadupstack")
    with pytest.raises(RecipeError, match="no condition 'splade'"):
        index_recipe(BEIR_RECIPE, "splade", "scifact")


def test_promised_corpus_sizes_are_the_corpora_on_disk(data_root):
    """The counts written in eval/ equal the local corpora (counted here, not copied)."""
    from laconic_pyserini.data import count_corpus
    from laconic_pyserini.recipe import load_recipe

    for path in sorted((REPO / "eval").glob("*.yaml")):
        for dataset in load_recipe(path).datasets.values():
            if dataset.name in ("scifact", "nfcorpus"):
                assert dataset.documents == count_corpus(data_root / dataset.name), (path, dataset.name)


def test_bad_corpus_sizes_are_refused(tmp_path):
    from laconic_pyserini.recipe import RecipeError, load_recipe

    bad = tmp_path / "bad.yaml"
    bad.write_text(BEIR_RECIPE.read_text().replace("documents: 5183", "documents: many"))
    with pytest.raises(RecipeError, match=r"\(scifact\)\.documents: the corpus size"):
        load_recipe(bad)


def _tiny_recipe(tmp_path: Path, documents: int) -> Path:
    """A reproduction recipe of one three-document corpus and BEIR's own splade-tiny condition."""
    import yaml

    corpus = tmp_path / "tiny" / "corpus.jsonl"
    corpus.parent.mkdir(exist_ok=True)
    texts = ["aspirin lowers the risk of heart attack", "", "statins and cholesterol"]
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                              for i, t in enumerate(texts)))
    beir = yaml.safe_load(BEIR_RECIPE.read_text())
    condition = next(c for c in beir["conditions"] if c["name"] == "splade-tiny")
    recipe = {**beir, "datasets": [{"name": "tiny", "data": str(corpus.parent), "documents": documents}],
              "groups": {}, "averages": {}, "conditions": [{**condition, "expected": {}}]}
    recipe["vars"] = {**beir["vars"], "batch_size": "2"}
    path = tmp_path / f"tiny-{documents}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_recipe_builds_a_real_index_and_checks_the_count(tmp_path):
    model_dir("splade-tiny")
    from laconic_pyserini.index.__main__ import main as index_main
    from laconic_pyserini.index.lucene import lucene_document_count
    from laconic_pyserini.encode import read_manifest
    from laconic_pyserini.index.manifest import read_index_manifest

    work = tmp_path / "work"
    recipe = _tiny_recipe(tmp_path, 3)
    assert index_main(["--recipe", str(recipe), "--condition", "splade-tiny", "--dataset", "tiny",
                       "--work", str(work)]) == 0
    index_dir = work / "indexes" / "tiny.splade-tiny"
    # The empty document is indexed too: the count is the corpus size.
    assert lucene_document_count(index_dir) == 3
    manifest = read_index_manifest(index_dir)
    assert manifest["kind"] == "impact" and manifest["spec"]["name"] == "splade-tiny"
    # Encoded as the condition's encode step says (--weights float), so a reproduction can resume it.
    assert read_manifest(work / "encoded" / "tiny.splade-tiny").weights == "float"
    # A rerun keeps the index; a recipe that promises another count fails loudly.
    stamp = (index_dir / "manifest.json").stat().st_mtime_ns
    assert index_main(["--recipe", str(recipe), "--condition", "splade-tiny", "--dataset", "tiny",
                       "--work", str(work)]) == 0
    assert (index_dir / "manifest.json").stat().st_mtime_ns == stamp
    wrong = _tiny_recipe(tmp_path, 4)
    assert index_main(["--recipe", str(wrong), "--condition", "splade-tiny", "--dataset", "tiny",
                       "--work", str(tmp_path / "other")]) == 2
    assert not (tmp_path / "other" / "indexes" / "tiny.splade-tiny").exists()
