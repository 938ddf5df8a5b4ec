"""The reproduction runner on real data: Anserini's published BEIR numbers through our CLIs, as a user runs them.

Expected values are never ours except where the recipe says so (splade-tiny): BM25 numbers are Anserini's 2CR
(pyserini 1.6.0's pyserini/2cr/beir.yaml), MiniLM's are MTEB's. The BM25 cells run as subprocesses exactly as the
page prints them; a second run of the same cells reuses the finished steps, which keeps the other tests cheap.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from laconic_pyserini.recipe import RecipeError, Tolerance, load_recipe, summarize

REPO = Path(__file__).resolve().parent.parent
BEIR = REPO / "eval" / "beir.yaml"
MTEB = REPO / "eval" / "mteb-retrieval.yaml"
PYSERINI_2CR = Path(importlib.util.find_spec("pyserini").origin).parent / "2cr" / "beir.yaml"

# Anserini 2CR, BEIR v1.0.0 (nDCG@10), pinned here independently of the recipe file.
ANSERINI = {("bm25-flat", "scifact"): 0.6789, ("bm25-flat", "nfcorpus"): 0.3218,
            ("bm25-multifield", "scifact"): 0.6647, ("bm25-multifield", "nfcorpus"): 0.3254}


def reproduce(*args: str, data_root: Path, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "laconic_pyserini.reproduce", *args, "--data-root", str(data_root)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def matrix_row(stdout: str, dataset: str) -> str:
    rows = [line for line in stdout.splitlines() if line.split()[:1] == [dataset]]
    assert rows, stdout
    return rows[-1]


@pytest.fixture(scope="module")
def bm25_report(tmp_path_factory, data_root):
    """The four BM25 cells of the issue, run once through the CLI; later tests reuse their indexes and runs."""
    report = tmp_path_factory.mktemp("reproduce")
    proc = reproduce("--recipe", str(BEIR), "--condition", "bm25-flat,bm25-multifield", "--dataset",
                     "scifact,nfcorpus", "--report", str(report), data_root=data_root)
    return report, proc


def test_bm25_cells_are_ok_against_anserini(bm25_report):
    report, proc = bm25_report
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for (condition, dataset), expected in ANSERINI.items():
        scores = json.loads((report / "beir" / condition / dataset / "scores.json").read_text())
        assert scores["scores"]["nDCG@10"] == pytest.approx(expected, abs=1e-9)
        assert scores["verdicts"]["nDCG@10"] == "OK"
        # The commands that ran are the page's commands: every BEIR search removes self-hits.
        assert any("laconic_pyserini.search" in c and "--remove-query" in c for c in scores["commands"])
    assert matrix_row(proc.stdout, "scifact").split()[1:] == ["0.6789", "OK", "0.6647", "OK"]
    assert matrix_row(proc.stdout, "nfcorpus").split()[1:] == ["0.3218", "OK", "0.3254", "OK"]


def test_rerun_reuses_finished_steps(bm25_report, data_root):
    report, _ = bm25_report
    proc = reproduce("--recipe", str(BEIR), "--condition", "bm25-flat", "--dataset", "scifact",
                     "--report", str(report), data_root=data_root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("  reuse ") == 2 and "  $ " not in proc.stdout
    assert matrix_row(proc.stdout, "scifact").split()[1:] == ["0.6789", "OK"]


def _one_cell_recipe(tmp_path: Path, expected_ndcg: float) -> Path:
    """The shipped bm25-flat/scifact cell with another expected value; same recipe name, so the run is reused."""
    raw = yaml.safe_load(BEIR.read_text())
    condition = next(c for c in raw["conditions"] if c["name"] == "bm25-flat")
    condition["expected"] = {"scifact": {"nDCG@10": expected_ndcg}}
    raw["conditions"] = [condition]
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_wrong_expected_value_fails_with_nonzero_exit(bm25_report, data_root, tmp_path):
    report, _ = bm25_report
    proc = reproduce("--recipe", str(_one_cell_recipe(tmp_path, 0.7000)), "--dataset", "scifact",
                     "--report", str(report), data_root=data_root)
    assert proc.returncode == 1, proc.stdout
    assert "nDCG@10 0.6789 FAIL (expected 0.7000)" in proc.stdout
    assert matrix_row(proc.stdout, "scifact").split()[1:] == ["0.6789", "FAIL"]


def test_near_miss_is_okish_and_says_so(bm25_report, data_root, tmp_path):
    report, _ = bm25_report
    proc = reproduce("--recipe", str(_one_cell_recipe(tmp_path, 0.6792)), "--dataset", "scifact",
                     "--report", str(report), data_root=data_root)
    assert proc.returncode == 0, proc.stdout
    assert matrix_row(proc.stdout, "scifact").split()[1:] == ["0.6789", "OKish"]
    assert "OKish (bm25-flat): within ±0.0005 of the expected score but not within ±0" in proc.stdout


def test_page_shows_commands_and_both_numbers(bm25_report, data_root, tmp_path):
    report, _ = bm25_report
    page = tmp_path / "reproduce-beir.md"
    proc = reproduce("--recipe", str(BEIR), "--dry-run", "--condition", "bm25-flat", "--dataset", "scifact",
                     "--report", str(report), "--page", str(page), data_root=data_root)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert "| scifact | 0.6789 / 0.6789 ✓ | 0.6647 / 0.6647 ✓ |" in text
    assert "| nfcorpus | 0.3218 / 0.3218 ✓ | 0.3254 / 0.3254 ✓ |" in text
    assert "| trec-covid | 0.5947 / – |" in text  # published, not run here
    # the exact command the runner ran, one option per line
    assert f"--index {report}/beir/bm25-flat/scifact/index \\\n  --topics beir/scifact" in text
    assert "--remove-query" in text


def test_list_shows_every_condition_dataset_expected_and_source(data_root):
    for path in (BEIR, MTEB):
        recipe = load_recipe(path)
        proc = reproduce("--recipe", str(path), "--list", data_root=data_root)
        assert proc.returncode == 0, proc.stderr
        blocks = proc.stdout.split("\n== ")[1:]
        assert [b.split(":", 1)[0] for b in blocks] == list(recipe.conditions)
        for block, condition in zip(blocks, recipe.conditions.values()):
            assert f"source: {condition.source}" in block
            rows = {tokens[0]: tokens[1:] for line in block.splitlines()
                    if line.startswith("   ") and (tokens := line.split()) and tokens[0] in recipe.datasets}
            for dataset in recipe.datasets:
                expected = condition.expected.get(dataset, {})
                shown = [f"{expected[m]:.4f}" if m in expected else "-" for m in recipe.metrics]
                assert rows[dataset] == shown, (condition.name, dataset)
    listing = reproduce("--recipe", str(BEIR), "--list", data_root=data_root).stdout
    for value in ("0.6789", "0.3218", "0.6647", "0.3254", "0.7560", "0.6451"):
        assert value in listing
    assert "runnable here: no (utahnlp/laconic-1b not in" in listing


def test_expected_numbers_are_anserinis_own():
    """Every BM25 and SPLADE++ cell of the recipe equals pyserini 1.6.0's 2CR data, the cited source."""
    published = {c["name"]: {d["dataset"]: d["scores"][0] for d in c["datasets"]}
                 for c in yaml.safe_load(PYSERINI_2CR.read_text())["conditions"]}
    recipe = load_recipe(BEIR)
    public = set(recipe.datasets)
    for name in ("bm25-flat", "bm25-multifield", "splade-pp-ed"):
        condition = recipe.conditions[name]
        assert set(condition.expected) == public  # all 13 public sets and the 12 forums, nothing invented
        for dataset, scores in condition.expected.items():
            assert scores == {m: pytest.approx(v, abs=1e-9) for m, v in published[name][dataset].items()}
    assert len(recipe.groups["cqadupstack"]) == 12


def test_averages_are_computed_from_the_cells():
    raw = yaml.safe_load(BEIR.read_text())
    flat = next(c for c in raw["conditions"] if c["name"] == "bm25-flat")["expected"]
    recipe = load_recipe(BEIR)
    summary = summarize(recipe, recipe.conditions["bm25-flat"].expected)
    forums = [d for d in flat if d.startswith("cqadupstack-")]
    cqa = sum(flat[d]["nDCG@10"] for d in forums) / 12
    assert summary["cqadupstack"]["nDCG@10"] == pytest.approx(cqa)
    beir13 = [d for d in flat if not d.startswith("cqadupstack-")]
    assert len(beir13) == 13
    assert summary["BEIR-13"]["nDCG@10"] == pytest.approx(sum(flat[d]["nDCG@10"] for d in beir13) / 13)
    assert summary["BEIR-14"]["nDCG@10"] == pytest.approx((sum(flat[d]["nDCG@10"] for d in beir13) + cqa) / 14)
    # no partial averages: one forum missing means no CQADupStack mean and no BEIR-14
    partial = {d: s for d, s in recipe.conditions["bm25-flat"].expected.items() if d != "cqadupstack-tex"}
    assert "cqadupstack" not in summarize(recipe, partial) and "BEIR-14" not in summarize(recipe, partial)


def test_mteb_recipe_conventions():
    recipe = load_recipe(MTEB)
    (average, members), = recipe.averages.items()
    assert average == "MTEB(eng, v1) retrieval" and len(members) == 15 and "cqadupstack" in members
    assert recipe.datasets["msmarco"].split == "dev"
    assert recipe.datasets["webis-touche2020"].data == "beir/webis-touche2020"
    assert all(d.split == "test" for n, d in recipe.datasets.items() if n != "msmarco")
    minilm = recipe.conditions["minilm-dense"].expected
    # MTEB's own aggregates of all-MiniLM-L6-v2, from its per-task files: CQADupstackRetrieval = 0.4132 (mean of
    # the 12 forum tasks) and the leaderboard's retrieval average 41.95 (mean of the 15 tasks).
    forums = recipe.groups["cqadupstack"]
    values = {**minilm, "cqadupstack": {"nDCG@10": sum(minilm[f]["nDCG@10"] for f in forums) / 12}}
    assert values["cqadupstack"]["nDCG@10"] == pytest.approx(0.4132, abs=1e-4)
    assert sum(values[m]["nDCG@10"] for m in members) / 15 == pytest.approx(0.4195, abs=1e-4)
    assert summarize(recipe, minilm)[average]["nDCG@10"] == pytest.approx(0.4195, abs=1e-4)
    # The paper's number was searched with Seismic: it is the approximate condition's.
    assert recipe.conditions["laconic-8b-seismic"].expected_averages[average] == {"nDCG@10": 0.602}


def _cell_blocks(stdout: str) -> dict[str, list[str]]:
    """A dry run's output as ``{"condition / dataset": [its lines]}``."""
    blocks: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = blocks.setdefault(line[1:-1], [])
        elif line.startswith("  "):
            current.append(line.strip())
    return blocks


def test_dry_run_shows_every_command_with_a_note_where_a_cell_cannot_run(data_root, tmp_path):
    proc = reproduce("--recipe", str(BEIR), "--dry-run", "--condition", "laconic-1b,dense-1b,bm25-flat",
                     "--dataset", "trec-covid,scifact", "--report", str(tmp_path), data_root=data_root)
    assert proc.returncode == 0, proc.stderr
    assert "SKIP" not in proc.stdout
    blocks = _cell_blocks(proc.stdout)
    recipe = load_recipe(BEIR)
    for name in ("laconic-1b", "dense-1b", "bm25-flat"):
        for dataset in ("trec-covid", "scifact"):
            lines = blocks[f"{name} / {dataset}"]
            commands = [line for line in lines if not line.startswith("note:")]
            # every step of the cell and its evaluation, whatever this machine lacks
            assert len(commands) == len(recipe.conditions[name].steps) + 1, lines
            assert all(c.startswith("python -m laconic_pyserini.") for c in commands), commands
    assert blocks["laconic-1b / scifact"][0].startswith("note: would be skipped on this machine: utahnlp/laconic-1b "
                                                        "not in")
    assert any("--encoder laconic-1b " in line for line in blocks["laconic-1b / scifact"])
    assert blocks["dense-1b / scifact"][0] == ("note: would be skipped on this machine: no model given for "
                                               "${dense_1b}: pass --var dense_1b=PATH")
    assert blocks["bm25-flat / trec-covid"][0].startswith("note: would be skipped on this machine: data "
                                                          "beir/trec-covid not under")
    assert blocks["bm25-flat / scifact"][0].startswith("python -m laconic_pyserini.index --bm25 --input beir/scifact")
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_tolerance_verdicts():
    tol = Tolerance(ok=0.0, okish=0.0005)
    assert tol.verdict(0.67894, 0.6789) == "OK"  # compared at 4 decimals
    assert tol.verdict(0.6794, 0.6789) == "OKish"  # 0.0005 away, despite float noise
    assert tol.verdict(0.6784, 0.6789) == "OKish"
    assert tol.verdict(0.6795, 0.6789) == "FAIL"


@pytest.mark.parametrize("problem,fix", [
    ({"steps": ["python -m x --in ${nowhere}"]}, "uses ${nowhere}"),
    ({"expected": {"no-such-set": {"nDCG@10": 0.5}}}, "unknown ['no-such-set']"),
    ({"expected": {"scifact": {"nDCG@10": 67.89}}}, "is not a score in [0, 1]"),
    ({"source": ""}, "say where the expected numbers come from"),
    ({"expectd": {"scifact": {"nDCG@10": 0.5}}}, "unknown key 'expectd'; did you mean 'expected'?"),
    ({"steps": "python -m x"}, "steps: expected a list, found str"),
    ({"steps": [{"command": "python -m x", "skip_if_exist": "f"}]}, "did you mean 'skip_if_exists'?"),
    ({"requires": {"encoder": ["x"]}}, "did you mean 'encoders'?"),
    ({"tolerance": {"ok": "0.1"}}, "tolerance.ok: expected a number"),
    ({"steps": ["python -m x --index 'a b"]}, "No closing quotation"),
    ({"index": "bm25-flatt"}, "(bm25-flat).index: "),  # an index recipe that does not exist
])
def test_bad_recipes_are_refused_with_the_place(tmp_path, problem, fix):
    raw = yaml.safe_load(BEIR.read_text())
    raw["conditions"][0].update(problem)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError, match=re.escape(str(path))) as info:
        recipe = load_recipe(path)
        condition = recipe.conditions["bm25-flat"]
        recipe.render(condition.steps[-1].command, condition, recipe.datasets["scifact"], "w")
    assert fix in str(info.value)


# ------------------------------------------------------------------------------------------- model cells (slow)


def _cell(report: Path, condition: str, dataset: str) -> dict:
    return json.loads((report / "beir" / condition / dataset / "scores.json").read_text())


@pytest.mark.slow
def _seed_index(report: Path, condition: str, dataset: str, index: Path) -> None:
    """Put the session's shared index where the cell builds it, so the runner's `skip_if_exists` reuses it.

    The index comes from the same typed functions the cell's encode/index commands call; encoding SciFact and
    NFCorpus again here would double the suite's slowest part. The search and eval steps still run for real.
    """
    from laconic_pyserini.outputs import open_folder
    from laconic_pyserini.reproduce import CELL_KIND

    # The cell folder is made as the runner makes it (its manifest says it is a cell of ours), then seeded.
    cell = open_folder(report / "beir" / condition / dataset, CELL_KIND, flag="--report", recipe="beir",
                       condition=condition, dataset=dataset)
    shutil.copytree(index, cell / "index")


@pytest.mark.slow
def test_splade_tiny_cells_reproduce_the_pinned_values(data_root, tmp_path, encoded):
    """Impact index (the session's shared encoding) → search → eval, as the page prints it."""
    for dataset in ("scifact", "nfcorpus"):
        _seed_index(tmp_path, "splade-tiny", dataset, encoded("splade-tiny", dataset)["index"])
    proc = reproduce("--recipe", str(BEIR), "--condition", "splade-tiny", "--dataset", "scifact,nfcorpus",
                     "--report", str(tmp_path), data_root=data_root, timeout=3600)
    assert proc.returncode == 0 and "SKIP" not in proc.stdout, proc.stdout + proc.stderr
    pinned = load_recipe(BEIR).conditions["splade-tiny"].expected
    for dataset in ("scifact", "nfcorpus"):
        cell = _cell(tmp_path, "splade-tiny", dataset)
        assert set(cell["verdicts"]) == {"nDCG@10", "R@100", "R@1000"} == set(pinned[dataset])
        assert set(cell["verdicts"].values()) == {"OK"}, cell
        assert any(c.startswith("python -m laconic_pyserini.encode --corpus beir/") for c in cell["commands"])


@pytest.mark.slow
def test_minilm_dense_on_scifact_against_mteb(data_root, tmp_path, encoded):
    """all-MiniLM-L6-v2 through our dense path against MTEB's published SciFact scores."""
    _seed_index(tmp_path, "minilm-dense", "scifact", encoded("minilm", "scifact")["index"])
    proc = reproduce("--recipe", str(BEIR), "--condition", "minilm-dense", "--dataset", "scifact",
                     "--report", str(tmp_path), data_root=data_root, timeout=3600)
    assert proc.returncode == 0 and "SKIP" not in proc.stdout, proc.stdout + proc.stderr
    cell = _cell(tmp_path, "minilm-dense", "scifact")
    assert cell["expected"]["nDCG@10"] == pytest.approx(0.64508)  # MTEB: SciFact ndcg_at_10 of all-MiniLM-L6-v2
    assert cell["verdicts"]["nDCG@10"] == "OK", cell
    assert set(cell["verdicts"].values()) <= {"OK", "OKish"}, cell
