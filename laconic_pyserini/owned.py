"""Which entries of an output folder this toolkit wrote: a record kept inside the folder.

A folder built aside and swapped in (:func:`laconic_pyserini.outputs.swap_in`) carries :data:`RECORD`, the
relative path of every file and folder the build wrote. A rebuild reads it first: anything else a user put inside
(notes, a run, a folder of their own) is *foreign*, and the rebuild is refused rather than delete it. The record
also marks the folder as a whole output, so no other output is written inside it. Nothing here writes or removes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import LaconicError

#: The record's name; it lists itself out (it is rewritten by every build).
RECORD = ".laconic-written.json"
RECORD_FORMAT = "laconic-pyserini/written-files"
#: The prefix of every temporary file or folder this toolkit writes; nothing else is ever cleaned up.
TMP_PREFIX = ".laconic-tmp-"


def is_temp_name(name: str) -> bool:
    return name.startswith(TMP_PREFIX)


class OutputError(LaconicError):
    """An output that cannot be written as asked (not ours, overlapping an input, locked); the message says why."""


def listing(folder: str | os.PathLike) -> list[str]:
    """Every entry under ``folder`` as a relative POSIX path, folders ending in ``/``; temporary names, and what
    is under them, and the record itself are left out. Symbolic links are listed, never followed."""
    folder = Path(folder)
    found = []
    for top, dirs, files in os.walk(folder):
        rel = Path(top).relative_to(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(TMP_PREFIX))
        for name in dirs:
            path = Path(top) / name
            found.append((rel / name).as_posix() + ("" if path.is_symlink() else "/"))
        dirs[:] = [d for d in dirs if not (Path(top) / d).is_symlink()]
        found += [(rel / name).as_posix() for name in files
                  if not name.startswith(TMP_PREFIX) and not (top == str(folder) and name == RECORD)]
    return sorted(found)


def record_text(folder: str | os.PathLike) -> str:
    """The record of what ``folder`` holds now (written into a finished build before it is swapped in)."""
    return json.dumps({"format": RECORD_FORMAT, "entries": listing(folder)}, indent=1) + "\n"


def recorded(folder: str | os.PathLike) -> set[str] | None:
    """The entries ``folder``'s record lists, or None when it has no readable record (an output written before
    outputs carried one)."""
    try:
        data = json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT or not isinstance(data.get("entries"), list):
        return None
    return {entry for entry in data["entries"] if isinstance(entry, str)}


def nested_record(parent: Path, child: Path) -> str | None:
    """``parent``'s record extended with ``child``, an output this toolkit built inside it (e.g. a Seismic cache in
    an impact index), so that rebuilding ``parent`` replaces the cache with it rather than call it foreign; None
    when ``parent`` has no record."""
    owned = recorded(parent)
    if owned is None:
        return None
    prefix = child.name + "/"
    entries = owned | {prefix, prefix + RECORD} | {prefix + entry for entry in listing(child)}
    return json.dumps({"format": RECORD_FORMAT, "entries": sorted(entries)}, indent=1) + "\n"


def has_record(folder: str | os.PathLike) -> bool:
    return (Path(folder) / RECORD).is_file()


def foreign(folder: str | os.PathLike, owned: set[str]) -> list[str]:
    """The entries of ``folder`` not in ``owned`` (a foreign folder is named once, not with its contents)."""
    out: list[str] = []
    for entry in listing(folder):
        if entry in owned or any(entry.startswith(parent) for parent in out if parent.endswith("/")):
            continue
        out.append(entry)
    return out


def check_rebuildable(folder: str | os.PathLike, *, flag: str, also: list[str] | None = None) -> None:
    """Refuse to replace our output ``folder`` while it holds anything its record (or ``also``: what the new build
    writes) does not list. Without a record and ``also`` nothing is known yet: the swap checks again."""
    check_not_current(folder, flag=flag)
    owned = recorded(folder)
    if owned is None and also is None:
        return
    extra = foreign(folder, (owned or set()) | set(also or ()))
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise OutputError(f"{folder}: holds what this toolkit did not write ({shown}); nothing was touched. Move "
                          f"that out of {folder} and rerun, or pass another folder as {flag}")


def check_not_inside_output(path: str | os.PathLike, *, flag: str) -> None:
    """Refuse an output inside a folder output of this toolkit (a rebuild of that one would replace it)."""
    for parent in Path(path).resolve().parents:
        if has_record(parent):
            raise OutputError(f"{path}: inside {parent}, an output of this toolkit that its rebuild replaces whole; "
                              f"pass a path outside it as {flag}")


def check_not_current(folder: str | os.PathLike, *, flag: str) -> None:
    """Refuse to build or replace a whole folder the current directory is in (``--index .``): the swap would move
    the ground from under the command."""
    if Path.cwd().resolve().is_relative_to(Path(folder).resolve()):
        raise OutputError(f"{folder}: the current folder is inside this output, which a build replaces whole; run "
                          f"the command from outside it, or pass another folder as {flag}")
