"""Index recipes (index_recipes/*.yaml): one per index kind and encoder, dataset-independent, checked key by key,
named by the reproduction recipes (whose cells run their commands), and built end to end on a real corpus."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import REPO, model_dir

BEIR_RECIPE = REPO / "eval" / "beir.yaml"
RECIPES = REPO / "index_recipes"


def test_one_recipe_per_index_kind_and_encoder():
    from laconic_pyserini.index.recipe import load_index_recipe

    recipes = {path.stem: load_index_recipe(path) for path in sorted(RECIPES.glob("*.yaml"))}
    kinds = {(r.kind, r.fields if r.kind == "bm25" else r.source.encoder) for r in recipes.values()}
    assert {("bm25", "flat"), ("bm25", "multifield"), ("impact", "splade-tiny"), ("impact", "laconic-1b"),
            ("impact", "laconic-3b"), ("impact", "laconic-8b"), ("impact", "splade-pp-ed"), ("faiss", "minilm"),
            ("seismic", "splade-tiny"), ("seismic", "laconic-8b"), ("milvus", "splade-tiny"),
            ("milvus", "minilm")} <= kinds
    assert len(kinds) == len(recipes) - 1  # no copies: only minilm-hnsw shares (faiss, minilm), with other knobs
    for name, recipe in recipes.items():
        assert recipe.name == name
        raw = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
        assert not {"dataset", "data", "documents", "corpus"} & set(raw)  # nothing names a dataset
    # The LACONIC recipes encode as the authors do (max length 256, float weights kept), and their Seismic
    # recipes index that very encoding.
    assert recipes["laconic-1b"].spec == {"max_length": 256} and recipes["laconic-1b"].encode.weights == "float"
    assert recipes["laconic-1b-seismic"].source is not None
    assert recipes["laconic-1b-seismic"].source.name == "laconic-1b"


def test_each_encode_and_index_command_is_written_once():
    """No condition of eval/ spells an encode or index command of its own where an index recipe exists: it names
    the recipe, and its cells run the recipe's commands (into the exact cell's folder for an approximate one)."""
    from laconic_pyserini.recipe import cell_commands, load_recipe

    for path in sorted((REPO / "eval").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        for entry in raw["conditions"]:
            own = " ".join(s if isinstance(s, str) else s["command"] for s in entry["steps"])
            if entry["name"].startswith("dense-") or "laconic_pyserini.fuse" in own:
                assert "index" not in entry  # a checkpoint given by --var, or a fusion of other conditions' runs
                continue
            assert (RECIPES / f"{entry['index']}.yaml").is_file(), (path, entry["name"])
            assert "laconic_pyserini.encode" not in own and "laconic_pyserini.index" not in own, entry["name"]
    recipe = load_recipe(BEIR_RECIPE)
    work = Path("/r/beir/laconic-1b-seismic/scifact")
    steps, _ = cell_commands(recipe, recipe.conditions["laconic-1b-seismic"], recipe.datasets["scifact"], work)
    encode = shlex.split(steps[0][0])
    assert encode[:3] == ["python", "-m", "laconic_pyserini.encode"]
    assert encode[encode.index("--embeddings") + 1] == "/r/beir/laconic-1b/scifact/vectors"
    assert encode[encode.index("--max-length") + 1] == "256" and encode[encode.index("--weights") + 1] == "float"
    assert encode[encode.index("--device") + 1] == "cpu" and encode[encode.index("--batch-size") + 1] == "32"
    assert steps[1][0] == ("python -m laconic_pyserini.index --input /r/beir/laconic-1b/scifact/vectors --index "
                           "/r/beir/laconic-1b/scifact/index --threads 2")
    assert "--backend seismic" in steps[2][0]


@pytest.mark.parametrize("text, message", [
    ("kind: impact\nencoder: splade-tiny\nbatch_sise: 8\n", r"unknown key\(s\) \['batch_sise'\] for a impact recipe"),
    ("kind: impact\nencoder: splade-tiny\ndataset: scifact\n", r"unknown key\(s\) \['dataset'\]"),
    ("kind: impact\nencoder: splade-tiny\nencode: {weight: float}\n", r"encode: a mapping of"),
    ("kind: impact\nencoder: splade-tiny\nencode: {weights: floats}\n", r"--weights floats: choose impact or float"),
    ("kind: impact\n", r"names its 'encoder'"),
    ("kind: lucene\n", r"kind 'lucene': choose one of bm25, impact, seismic, faiss, milvus"),
    ("kind: bm25\nfields: both\n", r"fields 'both': choose one of flat, multifield"),
    ("kind: faiss\nencoder: minilm\nindex_type: ivf\n", r"index_type 'ivf': choose flat or hnsw"),
    ("kind: faiss\nencoder: minilm\nhnsw_m: 0\n", r"hnsw_m must be a positive integer"),
    ("kind: seismic\nbase: minilm\n", r"base 'minilm' is a faiss recipe"),
    ("kind: seismic\nbase: splade-tiny\nbuild: {n_posting: 10}\n", r"build: Seismic's knobs"),
    ("kind: milvus\n", r"names its 'base'"),
])
def test_a_recipe_with_a_wrong_key_or_value_is_refused(tmp_path, text, message):
    from laconic_pyserini.index.recipe import IndexRecipeError, load_index_recipe

    for base in ("splade-tiny", "minilm"):  # bases are found beside the recipe
        (tmp_path / f"{base}.yaml").write_text((RECIPES / f"{base}.yaml").read_text())
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(IndexRecipeError, match=message) as caught:
        load_index_recipe(path)
    assert str(path) in str(caught.value)


def test_the_reproduction_form_reaches_the_conditions_index_recipe():
    """``index --recipe eval/beir.yaml --condition C --dataset D`` builds the index recipe condition C names."""
    from laconic_pyserini.index.__main__ import dataset_target, recipe_and_target
    from laconic_pyserini.index.recipe import IndexRecipeError
    from laconic_pyserini.recipe import RecipeError

    recipe, target, variables = recipe_and_target(BEIR_RECIPE, "quora", "laconic-8b-seismic")
    assert (recipe.name, recipe.kind, recipe.source.name) == ("laconic-8b-seismic", "seismic", "laconic-8b")
    assert (target.data, target.documents) == ("beir/quora", 522931) and variables["device"] == "cpu"
    recipe, target, _ = recipe_and_target(BEIR_RECIPE, "scifact", "bm25-multifield")
    assert recipe.kind == "bm25" and recipe.fields == "multifield"
    # The recipe form finds a dataset of eval/ by its short name, with its corpus size.
    assert dataset_target("cqadupstack-gis") == type(target)("cqadupstack-gis", "beir/cqadupstack/gis", 37637)
    with pytest.raises(RecipeError, match="names no index recipe"):  # a checkpoint given by --var
        recipe_and_target(BEIR_RECIPE, "scifact", "dense-1b")
    with pytest.raises(RecipeError, match="is a group"):
        recipe_and_target(BEIR_RECIPE, "cqadupstack", "splade-tiny")
    with pytest.raises(RecipeError, match="no condition 'splade'"):
        recipe_and_target(BEIR_RECIPE, "scifact", "splade")
    with pytest.raises(IndexRecipeError, match=r"is a reproduction recipe: name one of its conditions"):
        recipe_and_target(BEIR_RECIPE, "scifact")


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
    with pytest.raises(RecipeError, match=r"datasets\[\d+\]\.documents: expected an integer, found str 'many'"):
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
    # Encoded as the condition's index recipe says (--weights float), so a reproduction can resume it.
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


def test_recipes_of_every_kind_build_from_one_encoding(tmp_path):
    """``index --recipe index_recipes/NAME.yaml --dataset D``: the Milvus and Seismic recipes of splade-tiny share
    its encoding and Lucene index; the encoding records the recipe's settings, read back as the same object."""
    model_dir("splade-tiny")
    from laconic_pyserini.encode import read_manifest
    from laconic_pyserini.encode.settings import EncodeSettings
    from laconic_pyserini.index.__main__ import main as index_main
    from laconic_pyserini.index.lucene import lucene_document_count
    from laconic_pyserini.index.recipe import load_index_recipe
    from laconic_pyserini.index.seismic import read_seismic_build

    corpus = _tiny_recipe(tmp_path, 3).parent / "tiny"
    work = tmp_path / "work"

    def build(name: str, *extra: str) -> int:
        return index_main(["--recipe", str(RECIPES / f"{name}.yaml"), "--dataset", str(corpus), "--work", str(work),
                           "--encode-batch-size", "2", *extra])

    assert build("splade-tiny-milvus", "--index", f"milvus://{tmp_path}/tiny.db/tiny_splade") == 0  # milvus-lite
    encoded, index_dir = work / "encoded" / "tiny.splade-tiny", work / "indexes" / "tiny.splade-tiny"
    assert lucene_document_count(index_dir) == 3
    recorded = EncodeSettings.from_manifest(read_manifest(encoded).settings)
    assert recorded == load_index_recipe(RECIPES / "splade-tiny.yaml").encode.__class__(
        weights="float", docs_as_queries=False)
    assert build("splade-tiny-seismic") == 0
    seismic = read_seismic_build(index_dir / "seismic")
    assert seismic is not None and seismic["documents"] == 3 and seismic["weights"] == "float"
    # BM25 (Anserini leaves the empty document out, and says so): a corpus without one.
    (corpus / "corpus.jsonl").write_text("".join(line for line in (corpus / "corpus.jsonl").read_text(
        ).splitlines(keepends=True) if '"text": ""' not in line))
    assert build("bm25-flat") == 0
    assert lucene_document_count(work / "indexes" / "tiny.bm25-flat") == 2
    # --index names a Milvus address; with another kind it is an error, and nothing is built.
    assert build("bm25-multifield", "--index", str(tmp_path / "x")) == 2
    assert not (work / "indexes" / "tiny.bm25-multifield").exists()
