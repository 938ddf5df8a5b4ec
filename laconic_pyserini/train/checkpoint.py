"""Training checkpoints: written atomically every N steps, the newest complete one found on restart.

A checkpoint is a folder ``checkpoints/step-XXXXXXXX`` holding the LoRA weights, the optimizer and scheduler
states, the RNG states and ``state.json`` (step, config). It is written aside (``.laconic-tmp-step-XXXXXXXX``,
:mod:`laconic_pyserini.outputs`) and swapped in, so a crash mid-write leaves the previous checkpoint intact and the
half-written one is ignored (and removed) later.
The data position needs no saving: the batch order is a function of the step (:class:`.data.BatchOrder`).
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import torch

from ..outputs import aside_path, clean_temps, fresh_aside, remove_output, swap_in, write_json_atomic
from .distributed import barrier

logger = logging.getLogger(__name__)

PREFIX = "step-"
KIND = "checkpoint"  # recognised by its state.json (a checkpoint carries no manifest.json)


def checkpoint_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir: str | os.PathLike) -> dict[int, Path]:
    """``{step: folder}`` of every checkpoint whose ``state.json`` was written (the last file of a save)."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return {}
    return {int(p.name[len(PREFIX):]): p for p in folder.iterdir()
            if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
            and (p / "state.json").exists()}


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    done = complete_checkpoints(output_dir)
    return done[max(done)] if done else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: str | os.PathLike, step: int, *, weights: dict[str, torch.Tensor], optimizer,
                    scheduler, state: dict, rank: int = 0, keep: int = 2) -> Path:
    """Write checkpoint ``step`` (rank 0 writes weights and optimizer; every rank writes its own RNG state)."""
    folder = checkpoint_dir(output_dir)
    final = folder / f"{PREFIX}{step:08d}"
    tmp = aside_path(final)
    if rank == 0:
        fresh_aside(final)
    barrier()  # the folder exists before any rank writes into it
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
    if rank == 0:
        torch.save(weights, tmp / "adapter.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    barrier()  # every rank's RNG file is in before the rename
    if rank == 0:
        # state.json last: its presence marks the folder complete.
        write_json_atomic(tmp / "state.json", json.loads(json.dumps({"step": step, **state}, default=str)))
        swap_in(tmp, final, KIND, flag="train.output_dir", ours=_is_checkpoint)
        _prune(folder, keep)
        logger.info("checkpoint %s", final)
    return final


def _is_checkpoint(folder: Path) -> bool:
    return (folder / "state.json").is_file()


def _prune(folder: Path, keep: int) -> None:
    complete = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                       and p.name[len(PREFIX):].isdigit()), key=lambda p: int(p.name[len(PREFIX):]))
    for old in complete[:-keep]:
        remove_output(old, KIND, ours=_is_checkpoint)
    clean_temps(folder)  # checkpoints a crash left half-written


def step_checkpoint(output_dir: str | os.PathLike, step: int) -> Path:
    """The complete checkpoint of ``step``; a clear error listing the steps there are otherwise."""
    done = complete_checkpoints(output_dir)
    if step not in done:
        raise FileNotFoundError(f"{checkpoint_dir(output_dir) / f'{PREFIX}{step:08d}'}: no complete checkpoint of "
                                f"step {step} (complete checkpoints: {', '.join(map(str, sorted(done))) or 'none'})")
    return done[step]


def load_weights(path: Path, module: torch.nn.Module) -> dict:
    """Copy a checkpoint's trainable weights into ``module``; returns its ``state.json``."""
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    weights = torch.load(path / "adapter.pt", map_location="cpu")
    params = dict(module.named_parameters())
    missing = sorted(set(p for p, t in params.items() if t.requires_grad) - set(weights))
    if missing:
        raise RuntimeError(f"{path}: checkpoint lacks {len(missing)} trainable tensors (e.g. {missing[0]}); "
                           "it was written with another LoRA config: use a new train.output_dir")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    return state


def load_checkpoint(path: Path, *, module: torch.nn.Module, optimizer, scheduler, rank: int = 0) -> dict:
    """Restore weights, optimizer, scheduler and this rank's RNG state; returns ``state.json``."""
    state = load_weights(path, module)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu"))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu"))
    rng_file = path / f"rng-{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    else:
        logger.warning("%s: no RNG state for rank %d (different number of processes?); continuing", path, rank)
    return state
