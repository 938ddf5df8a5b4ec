"""Training checkpoints: written atomically every N steps, the newest complete one found on restart.

A checkpoint is a folder ``checkpoints/step-XXXXXXXX`` holding the LoRA weights (``adapter.safetensors``), the
optimizer and scheduler states (``optimizer.safetensors``, ``scheduler.safetensors``), each rank's RNG states
(``rng-N.safetensors``: python, numpy, torch CPU and CUDA generators) and ``state.json`` (step, config).
Nothing is pickled (:mod:`.state_files`): a checkpoint folder may be writable by others, and unpickling runs code.
A checkpoint of an older version (``*.pt`` pickles) is refused with an error, never read: its run restarts in a
new ``train.output_dir`` (or with the old ``checkpoints/`` moved aside).
It is written aside (``.laconic-tmp-step-XXXXXXXX``, :mod:`laconic_pyserini.outputs`) and swapped in, so a crash
mid-write leaves the previous checkpoint intact and the half-written one is ignored (and removed) later.
The data position needs no saving: the batch order is a function of the step (:class:`.data.BatchOrder`).
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import LaconicError
from ..outputs import aside_path, clean_temps, fresh_aside, remove_output, swap_in, write_json_atomic
from .distributed import barrier
from .state_files import StateFileError, load_state, save_state

logger = logging.getLogger(__name__)

PREFIX = "step-"
KIND = "checkpoint"  # recognised by its state.json (a checkpoint carries no manifest.json)
WEIGHTS = "adapter.safetensors"
OPTIMIZER = "optimizer.safetensors"
SCHEDULER = "scheduler.safetensors"


class CheckpointError(LaconicError, FileNotFoundError):
    """A checkpoint that cannot be resumed (an older pickle format, a damaged file); the message says what to do."""


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
    """Every generator training draws from: python ``random``, numpy's global one, torch CPU (and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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
    save_state(tmp / f"rng-{rank}.safetensors", rng_state())
    if rank == 0:
        save_state(tmp / WEIGHTS, dict(weights))
        save_state(tmp / OPTIMIZER, optimizer.state_dict())
        save_state(tmp / SCHEDULER, scheduler.state_dict())
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
        raise CheckpointError(f"{checkpoint_dir(output_dir) / f'{PREFIX}{step:08d}'}: no complete checkpoint of "
                                f"step {step} (complete checkpoints: {', '.join(map(str, sorted(done))) or 'none'})")
    return done[step]


def load_weights(path: Path, module: torch.nn.Module) -> dict:
    """Copy a checkpoint's trainable weights into ``module``; returns its ``state.json``."""
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    weights = _read(path, WEIGHTS)
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
    optimizer.load_state_dict(_read(path, OPTIMIZER))
    scheduler.load_state_dict(_read(path, SCHEDULER))
    rng_file = path / f"rng-{rank}.safetensors"
    if rng_file.exists():
        set_rng_state(_read(path, rng_file.name))
    else:
        logger.warning("%s: no RNG state for rank %d (different number of processes?); continuing", path, rank)
    return state


def _read(path: Path, name: str):
    """One state file of checkpoint ``path``; an older checkpoint's pickles are refused, never opened."""
    file = path / name
    if not file.exists():
        pickles = sorted(p.name for p in path.glob("*.pt"))
        if pickles:
            raise CheckpointError(
                f"{path}: a checkpoint of an older version, stored as pickles ({', '.join(pickles)}), which this "
                f"version never loads (unpickling a crafted file runs code); resume is not possible: train into a "
                f"new train.output_dir, or move {path.parent} aside to start this run again from step 0")
        raise CheckpointError(f"{file}: missing from the checkpoint; move {path} aside to resume from an earlier one")
    try:
        return load_state(file)
    except StateFileError as exc:
        raise CheckpointError(f"{exc}; move {path} aside to resume from an earlier checkpoint") from None
