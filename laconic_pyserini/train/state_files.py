"""Optimizer, scheduler and RNG states in files that cannot run code when read: safetensors plus JSON.

``torch.save`` writes pickles, and unpickling a crafted file runs arbitrary code, so a checkpoint folder someone
else could write into (a shared scratch disk, a downloaded run) must never be unpickled. A state (nested dicts,
lists, tuples, numbers, strings, tensors, numpy arrays) is written as one ``.safetensors`` file: its tensors as the
file's tensors, the rest as a JSON skeleton in the file's metadata, where each tensor is ``{"__tensor__": key}``.
Dict keys keep their type (the optimizer's are ints) and tuples stay tuples, so a state reads back equal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import LaconicError

TREE_KEY = "laconic_state_tree"
FORMAT_KEY = "format"
FORMAT = "laconic-pyserini/state-tree-1"


class StateFileError(LaconicError, ValueError):
    """A state file that is not one this module wrote; the message names it."""


def _encode(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, torch.Tensor):
        key = f"{len(tensors):06d}"
        # clone: safetensors refuses tensors that share storage, and views must not keep the full base alive.
        tensors[key] = value.detach().to("cpu").clone().contiguous()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {"__dict__": [[_encode_key(k), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a state file (only tensors, arrays, dicts, lists, "
                    "tuples, numbers and strings)")


def _encode_key(key):
    if key is None or isinstance(key, (bool, int, float, str)):
        return key
    raise TypeError(f"cannot store a dict key of type {type(key).__name__} in a state file")


def _decode(node, tensors: dict[str, torch.Tensor], where: Path):
    if isinstance(node, list):
        return [_decode(v, tensors, where) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        try:
            return tensors[node["__tensor__"]]
        except KeyError:
            raise StateFileError(f"{where}: names tensor {node['__tensor__']!r}, which it does not hold") from None
    if "__ndarray__" in node:
        return np.array(node["__ndarray__"], dtype=np.dtype(node["dtype"]))
    if "__tuple__" in node:
        return tuple(_decode(v, tensors, where) for v in node["__tuple__"])
    if "__dict__" in node:
        return {k: _decode(v, tensors, where) for k, v in node["__dict__"]}
    raise StateFileError(f"{where}: unknown node {sorted(node)} in its state tree")


def save_state(path: str | os.PathLike, state) -> None:
    """Write ``state`` to ``path`` (a ``.safetensors`` file)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors)
    save_file(tensors, str(path), metadata={FORMAT_KEY: FORMAT, TREE_KEY: json.dumps(tree)})


def load_state(path: str | os.PathLike, device: str = "cpu"):
    """The state :func:`save_state` wrote to ``path``; reading it runs no code from the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise StateFileError(f"{path}: not a readable safetensors state file ({exc})") from None
    if metadata.get(FORMAT_KEY) != FORMAT or TREE_KEY not in metadata:
        raise StateFileError(f"{path}: not a state file written by laconic-pyserini (format "
                             f"{metadata.get(FORMAT_KEY)!r})")
    try:
        tree = json.loads(metadata[TREE_KEY])
    except json.JSONDecodeError as exc:
        raise StateFileError(f"{path}: damaged state tree ({exc.msg})") from None
    return _decode(tree, tensors, path)
