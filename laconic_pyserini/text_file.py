"""Reading a configuration file (a manifest, a model folder's JSON, a recipe) whole: bounded, UTF-8, one error.

A configuration file is small; one that is not (a ``modules.json`` linked to ``/dev/zero``, a corpus passed where a
config belongs) is refused after :data:`MAX_CONFIG_BYTES` bytes instead of being read into memory.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The largest configuration file read (64 MiB: far above any manifest or recipe this toolkit writes).
MAX_CONFIG_BYTES = 64 << 20


def read_config_text(path: str | os.PathLike, error: type[Exception], *, limit: int = MAX_CONFIG_BYTES) -> str:
    """The text of ``path``; ``error`` naming the file when it is larger than ``limit`` bytes or not UTF-8 (with
    the line of the first bad byte). A missing file raises ``FileNotFoundError`` as ``open`` does."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path}: larger than {limit} bytes, too large for a configuration file; pass the right file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save the file as UTF-8") \
            from None
