"""Reading the JSON files this toolkit writes (manifests), with one error that names the file and says what to do."""

from __future__ import annotations

import json
from pathlib import Path

from .text_file import read_config_text


def read_json_file(path: Path, error: type[Exception], *, missing: str, invalid: str, shape: type | None = dict):
    """The JSON value in ``path``; ``error`` (a toolkit error class) naming the file, and the line of a syntax
    error, with what to do: ``missing`` when there is no such file, ``invalid`` when it is not JSON, not UTF-8,
    too large (:mod:`laconic_pyserini.text_file`), nested too deep, or not of type ``shape`` (an object by default;
    None takes any value)."""
    if not path.exists() or path.is_dir():  # a device or a pipe is read, bounded, and refused when too large
        raise error(f"{path}: missing; {missing}")
    text = read_config_text(path, error)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); {invalid}") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deep; {invalid}") from None
    if shape is not None and not isinstance(value, shape):
        wanted = {dict: "an object {...}", list: "a list [...]"}.get(shape, shape.__name__)
        raise error(f"{path}: expected {wanted}, found {type(value).__name__}; {invalid}")
    return value
