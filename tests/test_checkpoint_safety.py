"""Training checkpoints never unpickle, and resuming restores RNG and optimizer state exactly.

The model is the real splade-tiny (a 2-layer BERT) trained for a few real AdamW steps on real SciFact titles; the
crafted files are real pickles whose ``__reduce__`` creates a marker file when unpickled.
"""

from __future__ import annotations

import json
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, model_dir

STEPS = 3


class _Payload:
    """Unpickling this creates ``marker``: what a crafted ``rng-0.pt`` could do with any command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _crafted(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps(_Payload(marker)))
    return path


@pytest.fixture(scope="module")
def texts(data_root) -> list[str]:
    with open(data_root / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        return [json.loads(next(f))["title"] for _ in range(8)]


def _setup(seed: int = 0):
    """splade-tiny with its MLM head, AdamW (weight decay on) and a warm-up LambdaLR, as the training loop builds."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    folder = model_dir("splade-tiny")
    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_pretrained(folder, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 4))
    return model, tokenizer, optimizer, scheduler


def _steps(model, tokenizer, optimizer, scheduler, texts, n: int) -> None:
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    for _ in range(n):
        # Random token dropout draws from torch's generator, so a wrong RNG restore changes the next steps.
        keep = torch.rand(batch["input_ids"].shape) > 0.15
        inputs = torch.where(keep, batch["input_ids"], tokenizer.mask_token_id)
        loss = model(input_ids=inputs, attention_mask=batch["attention_mask"], labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(4).tolist()


def _assert_same_tree(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same_tree(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_tree(x, y)
    else:
        assert a == b


def test_resume_restores_rng_and_optimizer_state_exactly(tmp_path, texts):
    from laconic_pyserini.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    model, tokenizer, optimizer, scheduler = _setup()
    _steps(model, tokenizer, optimizer, scheduler, texts, STEPS)
    random.seed(7)
    np.random.seed(7)
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    save_checkpoint(tmp_path, STEPS, weights=weights, optimizer=optimizer, scheduler=scheduler, state={"x": 1})
    saved = latest_checkpoint(tmp_path)
    assert sorted(p.name for p in saved.iterdir() if p.name != ".laconic-written.json") == [
        "adapter.safetensors", "optimizer.safetensors", "rng-0.safetensors", "scheduler.safetensors", "state.json"]
    expected_draws = _draws()
    _steps(model, tokenizer, optimizer, scheduler, texts, 2)  # the uninterrupted run goes on

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    fresh, _, fresh_optimizer, fresh_scheduler = _setup(seed=1)
    state = load_checkpoint(saved, module=fresh, optimizer=fresh_optimizer, scheduler=fresh_scheduler)
    assert state["step"] == STEPS and state["x"] == 1
    assert _draws() == expected_draws
    for name, p in fresh.named_parameters():
        assert torch.equal(p, weights[name]), name
    assert len(fresh_optimizer.state_dict()["state"]) == len(list(fresh.parameters()))
    assert fresh_scheduler.state_dict()["last_epoch"] == STEPS

    # The resumed run then takes exactly the steps the uninterrupted one took.
    _steps(fresh, tokenizer, fresh_optimizer, fresh_scheduler, texts, 2)
    _assert_same_tree(fresh_optimizer.state_dict(), optimizer.state_dict())
    _assert_same_tree(fresh_scheduler.state_dict(), scheduler.state_dict())
    for (name, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), name


def test_state_file_round_trip_keeps_types():
    from laconic_pyserini.train.state_files import load_state, save_state

    state = {0: {"step": torch.tensor(3.0), "exp": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)},
             "groups": [{"betas": (0.9, 0.999), "params": [0, 1], "amsgrad": False, "lr": 1e-3, "name": None}],
             "python": random.getstate(), "numpy": np.random.get_state(), "inf": float("inf")}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_state(Path(tmp) / "s.safetensors", state)
        back = load_state(Path(tmp) / "s.safetensors")
    _assert_same_tree({k: v for k, v in back.items() if k != "numpy"}, {k: v for k, v in state.items() if k != "numpy"})
    assert back["numpy"][0] == "MT19937" and np.array_equal(back["numpy"][1], state["numpy"][1])
    assert back["numpy"][1].dtype == state["numpy"][1].dtype and back["numpy"][2:] == state["numpy"][2:]


def test_crafted_pickle_beside_a_checkpoint_is_never_executed(tmp_path, texts):
    from laconic_pyserini.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    # The payload is live: unpickling it does create its marker.
    armed = tmp_path / "armed"
    pickle.loads(_crafted(tmp_path / "probe.pt", armed).read_bytes())
    assert armed.exists()

    model, tokenizer, optimizer, scheduler = _setup()
    _steps(model, tokenizer, optimizer, scheduler, texts, 1)
    save_checkpoint(tmp_path / "run", 1, weights=dict(model.named_parameters()), optimizer=optimizer,
                    scheduler=scheduler, state={})
    saved = latest_checkpoint(tmp_path / "run")
    marker = tmp_path / "pwned"
    _crafted(saved / "rng-0.pt", marker)
    _crafted(saved / "rng-1.pt", marker)
    load_checkpoint(saved, module=model, optimizer=optimizer, scheduler=scheduler, rank=0)
    load_checkpoint(saved, module=model, optimizer=optimizer, scheduler=scheduler, rank=1)  # no rng-1: warns
    assert not marker.exists()


def test_older_pickle_checkpoint_is_refused_unread(tmp_path):
    from laconic_pyserini.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint

    model, _, optimizer, scheduler = _setup()
    old = tmp_path / "checkpoints" / "step-00000002"
    old.mkdir(parents=True)
    marker = tmp_path / "pwned"
    for name in ("adapter.pt", "optimizer.pt", "scheduler.pt", "rng-0.pt"):
        _crafted(old / name, marker)
    (old / "state.json").write_text(json.dumps({"step": 2}))
    assert latest_checkpoint(tmp_path) == old
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(old, module=model, optimizer=optimizer, scheduler=scheduler)
    message = str(error.value)
    assert str(old) in message and "adapter.pt" in message and "rng-0.pt" in message
    assert "new train.output_dir" in message
    assert not marker.exists()


def test_pickle_disguised_as_a_state_file_is_refused(tmp_path):
    from laconic_pyserini.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    model, _, optimizer, scheduler = _setup()
    save_checkpoint(tmp_path, 1, weights=dict(model.named_parameters()), optimizer=optimizer, scheduler=scheduler,
                    state={})
    folder = tmp_path / "checkpoints" / "step-00000001"
    marker = tmp_path / "pwned"
    _crafted(folder / "optimizer.safetensors", marker)
    with pytest.raises(CheckpointError, match=re.escape(str(folder / "optimizer.safetensors"))):
        load_checkpoint(folder, module=model, optimizer=optimizer, scheduler=scheduler)
    assert not marker.exists()


def test_package_never_unpickles():
    """No ``torch.load`` / ``pickle`` / ``weights_only=False`` in the package source (a grep of the source)."""
    pattern = re.compile(r"torch\.load\(|weights_only\s*=\s*False|\bpickle\.loads?\(|import pickle|allow_pickle=True")
    found = [f"{path.relative_to(REPO)}:{number}" for path in sorted((REPO / "laconic_pyserini").rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if pattern.search(line)]
    assert found == []
