"""Reading the YAML files this toolkit takes as data (recipes, training configs), with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path


def read_yaml_mapping(path: str | os.PathLike, error: type[Exception], *, missing: str, shape: str,
                      empty_ok: bool = False) -> dict:
    """The top-level mapping of the YAML file at ``path``.

    Raises ``error`` naming the file when it does not exist (``missing`` says where the shipped ones are), is not
    valid YAML (with the parser's line and column), or is not a mapping (``shape`` says what it should hold). An
    empty file is ``{}`` when ``empty_ok``.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file ({missing})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                    "re-save the file as UTF-8") from None
    if raw is None and empty_ok:
        return {}
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping with {shape}")
    return raw
