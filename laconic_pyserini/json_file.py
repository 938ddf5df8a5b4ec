"""Reading the JSON files this toolkit writes (manifests), with one error that names the file and says what to do."""

from __future__ import annotations

import json
from pathlib import Path


def read_json_file(path: Path, error: type[Exception], *, missing: str, invalid: str):
    """The JSON value in ``path``; ``error`` (a toolkit error class) naming the file, and the line of a syntax
    error, with what to do: ``missing`` when there is no such file, ``invalid`` when it is not JSON."""
    if not path.is_file():
        raise error(f"{path}: missing; {missing}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); {invalid}") from None
