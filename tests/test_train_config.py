"""Training configs are validated completely before any model loads.

Each bad config goes through the real CLI (``laconic_pyserini.train.__main__.main``, and ``python -m`` for a few):
exit 2, one ``error:`` line naming the config file and the key, and no output folder: training stopped before it
created anything, so before the model (which it loads before creating the output folder) was read.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PAIRS = "title_abstract_pairs.jsonl"


def _base(data_root: Path, out: Path) -> dict:
    return {"model": {"backbone": "smollm2-135m", "name": "t"}, "lora": {"r": 4, "alpha": 8},
            "data": {"train": str(data_root / "training" / PAIRS)},
            "optim": {"lr": 1e-4}, "loss": {}, "train": {"phase": 1, "output_dir": str(out), "max_steps": 2}}


# (case id, {section: {key: value}} replaced in the valid base config, the key the message must name, text in it)
BAD = [
    ("negative-lr", {"optim": {"lr": -1e-4}}, "optim.lr", "> 0"),
    ("zero-lr", {"optim": {"lr": 0}}, "optim.lr", "> 0"),
    ("nan-lr", {"optim": {"lr": float("nan")}}, "optim.lr", "nan"),
    ("text-lr", {"optim": {"lr": "fast"}}, "optim.lr", "'fast'"),
    ("negative-weight-decay", {"optim": {"weight_decay": -0.01}}, "optim.weight_decay", "≥ 0"),
    ("zero-max-grad-norm", {"optim": {"max_grad_norm": 0}}, "optim.max_grad_norm", "> 0"),
    ("infinite-max-grad-norm", {"optim": {"max_grad_norm": float("inf")}}, "optim.max_grad_norm", "inf"),
    ("warmup-one", {"optim": {"warmup_ratio": 1.0}}, "optim.warmup_ratio", "[0, 1)"),
    ("dropout-above-one", {"lora": {"dropout": 1.5}}, "lora.dropout", "[0, 1)"),
    ("negative-dropout", {"lora": {"dropout": -0.1}}, "lora.dropout", "[0, 1)"),
    ("zero-alpha", {"lora": {"alpha": 0}}, "lora.alpha", "> 0"),
    ("no-target-modules", {"lora": {"target_modules": []}}, "lora.target_modules", "non-empty list"),
    ("zero-temperature", {"loss": {"temperature": 0}}, "loss.temperature", "> 0"),
    ("negative-flops", {"loss": {"flops_passage": -1e-3}}, "loss.flops_passage", "≥ 0"),
    ("bool-batch-size", {"train": {"batch_size": True}}, "train.batch_size", "integer"),
    ("zero-epochs", {"train": {"epochs": 0}}, "train.epochs", "> 0"),
    ("negative-seed", {"train": {"seed": -1}}, "train.seed", "≥ 0"),
    ("zero-threads", {"train": {"threads": 0}}, "train.threads", "≥ 1"),
    ("text-merge", {"train": {"merge": "yes"}}, "train.merge", "true or false"),
    ("zero-max-examples", {"data": {"max_examples": 0}}, "data.max_examples", "≥ 1"),
    ("missing-data-file", {"data": {"train": "no/such/pairs.jsonl"}}, "data.train", "no such file"),
    ("missing-mined-negatives", {"data": {"train": "runs/mined/none.jsonl"}, "train": {"phase": 2}},
     "data.train", "train.mine"),
    ("missing-phase1-output", {"model": {"backbone": "runs/no-phase1/final"}, "train": {"phase": 2}},
     "model.backbone", "run phase 1 first"),
    ("missing-tokenizer", {"model": {"tokenizer": "./no/tokenizer"}}, "model.tokenizer", "no such folder"),
]


def _write(tmp_path: Path, data_root: Path, changes: dict) -> tuple[Path, Path]:
    out = tmp_path / "run"
    config = _base(data_root, out)
    for section, values in changes.items():
        config[section].update(values)
    path = tmp_path / "bad config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path, out


@pytest.mark.parametrize("changes,key,text", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_config_is_refused_before_anything_loads(tmp_path, data_root, capsys, changes, key, text):
    from laconic_pyserini.train.__main__ import main

    path, out = _write(tmp_path, data_root, changes)
    assert main(["--config", str(path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: {path}: ") and key in errors[0] and text in errors[0]
    assert not out.exists()


def test_every_problem_is_reported_at_once(tmp_path, data_root, capsys):
    from laconic_pyserini.train.__main__ import main

    path, out = _write(tmp_path, data_root, {"optim": {"lr": -1, "weight_decay": -1}, "lora": {"dropout": 2}})
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert all(key in err for key in ("optim.lr", "optim.weight_decay", "lora.dropout"))
    assert not out.exists()


def test_overrides_are_validated_too(tmp_path, data_root, capsys):
    from laconic_pyserini.train.__main__ import main

    path, out = _write(tmp_path, data_root, {})
    assert main(["--config", str(path), "--set", "optim.max_grad_norm=-1"]) == 2
    assert "optim.max_grad_norm" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("changes,key", [({"optim": {"lr": -1e-4}}, "optim.lr"),
                                         ({"data": {"train": "missing.jsonl"}}, "data.train")])
def test_cli_exits_2_without_traceback(tmp_path, data_root, changes, key):
    path, out = _write(tmp_path, data_root, changes)
    result = subprocess.run([sys.executable, "-m", "laconic_pyserini.train", "--config", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and f"error: {path}: " in result.stderr and key in result.stderr
    assert not out.exists()


def test_every_config_field_has_a_rule():
    from laconic_pyserini.train import config

    fields = {(name, f.name) for name, cls in config._SECTIONS.items() for f in dataclasses.fields(cls)}
    assert fields == set(config.RULES)


def test_shipped_and_valid_configs_still_load(tmp_path, data_root):
    from laconic_pyserini.train.config import check_inputs, config_from_dict, load_config

    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_config(path)  # ranges only: their data and phase-1 outputs are made by the documented commands
    valid = config_from_dict(_base(data_root, tmp_path / "run"), source="valid.yaml")
    check_inputs(valid)
    assert valid.optim.lr == 1e-4 and not (tmp_path / "run").exists()
