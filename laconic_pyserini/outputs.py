"""Writing outputs without losing anything: atomic files, folders built aside and swapped in, locks, ownership.

Every command of this toolkit writes through this module, and it is the only code in the package that removes
anything. The rules it keeps:

- A temporary name starts with :data:`TMP_PREFIX` (``.laconic-tmp-``); only such names are ever cleaned up, so
  a user's ``notes.tmp`` or ``thesis.tex`` is never touched.
- An output folder is either *fresh* (missing, or holding nothing but empty folders and our temporary names) or
  *ours of the requested kind*: its ``manifest.json`` says ``"kind": KIND``. Anything else is refused with an
  :class:`OutputError` naming the folder and the option to change; so is an output equal to, inside, or
  containing one of the command's inputs.
- A folder that must never be seen half-built is built aside (:func:`aside_path`, a stable name so a rerun can
  resume it) and swapped in by :func:`swap_in`; an older output of the same kind it replaces is removed only
  after the new one is in place, and only while it holds nothing but what its record (:mod:`.owned`) lists.
- One writer per output: :func:`locked` keeps ``PID`` and host in a lock file beside the target; a second writer
  stops with an error, and a dead process's lock (same host) is taken over.

Test hook (read at call time): ``LACONIC_TEST_STOP_AFTER_PARTS=N`` makes a writer calling :func:`after_commit`
exit with ``os._exit`` (as ``kill -9`` would) after its N-th committed part; ``LACONIC_TEST_WAIT_AFTER_PARTS=N``
makes it block after the N-th part until its standard input is closed (a test holds a writer mid-run).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .owned import (RECORD, TMP_PREFIX, OutputError, check_not_current, check_not_inside_output, check_rebuildable,
                    is_temp_name, listing, nested_record, record_text)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK_SUFFIX = ".lock"
# Manifests written before outputs carried a "kind": their "format" says the same thing.
_FORMAT_KINDS = {"laconic-pyserini/encoded-collection": "encoded", "laconic-pyserini/faiss-index": "faiss"}
STOP_ENV = "LACONIC_TEST_STOP_AFTER_PARTS"
WAIT_ENV = "LACONIC_TEST_WAIT_AFTER_PARTS"


def temp_path(target: str | os.PathLike, *, stable: bool = False) -> Path:
    """A temporary name beside ``target`` that keeps its suffix (``np.savez`` and ``savefig`` read it).

    Per process unless ``stable`` (a name a rerun finds again, for work that resumes).
    """
    target = Path(target)
    tag = "" if stable else f"{os.getpid()}-"
    return target.parent / f"{TMP_PREFIX}{tag}{target.name}"


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` through; it replaces ``target`` only if the block succeeds.

    A reader (or a crash) sees the old file or the new one, never half of one. ``target`` must not be a folder.
    """
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; pass a file name for this output")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)
    fsync_dir(target.parent)


@contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                newline: str | None = None):
    """``open`` for writing ``target`` atomically (see :func:`atomic_path`)."""
    binary = "b" in mode
    with atomic_path(target) as tmp, open(tmp, mode, encoding=None if binary else encoding,
                                          newline=None if binary else newline) as f:
        yield f


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    with atomic_open(target, "wb") as f:
        f.write(data)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike, data: dict, *, sort_keys: bool = False) -> None:
    write_text_atomic(target, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n")


def manifest_kind(folder: str | os.PathLike) -> str | None:
    """The ``kind`` in ``folder/manifest.json`` (an older manifest's ``format``), or None if it has none."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("kind") or _FORMAT_KINDS.get(data.get("format"))
    return kind if isinstance(kind, str) else None


def is_fresh(folder: str | os.PathLike) -> bool:
    """Missing, or holding nothing but (empty) folders and this toolkit's temporary names."""
    folder = Path(folder)
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    for entry in folder.iterdir():
        if is_temp_name(entry.name):
            continue
        if entry.is_symlink() or not entry.is_dir() or not is_fresh(entry):
            return False
    return True


def check_apart(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], *, flag: str) -> None:
    """Refuse an output equal to, inside, or containing an input (writing it would destroy the input)."""
    out = Path(output).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if out == source:
            how = "is"
        elif out.is_relative_to(source):
            how = "is inside"
        elif source.is_relative_to(out):
            how = "contains"
        else:
            continue
        raise OutputError(f"{output}: this output {how} the input {given}; pass a new folder outside it as {flag}")


def claim_folder(folder: str | os.PathLike, kind: str, *, flag: str,
                 inputs: Iterable[str | os.PathLike | None] = (),
                 ours: Callable[[Path], bool] | None = None) -> bool:
    """Check that ``folder`` may be written as a ``kind`` output; True when it already holds one of ours.

    ``ours`` recognises our output where no top manifest exists yet (e.g. the shards of an encoding).
    """
    folder = Path(folder)
    check_apart(folder, inputs, flag=flag)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder; pass a new folder as {flag}")
    found = manifest_kind(folder)
    if found == kind or (found is None and ours is not None and folder.is_dir() and ours(folder)):
        check_rebuildable(folder, flag=flag)
        return True
    if is_fresh(folder):
        return False
    if found is not None:
        raise OutputError(f"{folder}: holds this toolkit's {found!r} output, not {kind!r}; pass another folder "
                          f"as {flag}")
    raise OutputError(f"{folder}: not empty and not an output of this toolkit of kind {kind!r} (its {MANIFEST} "
                      f"would say so); nothing in it was touched. Pass a new or empty folder as {flag}")


def open_folder(folder: str | os.PathLike, kind: str, *, flag: str,
                inputs: Iterable[str | os.PathLike | None] = (), ours: Callable[[Path], bool] | None = None,
                **about) -> Path:
    """Claim ``folder`` (:func:`claim_folder`) and, when it is fresh, create it with a ``manifest.json`` saying
    ``kind`` (plus ``about``), so that a rerun -- even after a crash -- recognises it as ours."""
    folder = Path(folder)
    claim_folder(folder, kind, flag=flag, inputs=inputs, ours=ours)
    folder.mkdir(parents=True, exist_ok=True)
    if manifest_kind(folder) != kind:
        write_json_atomic(folder / MANIFEST, {"kind": kind, **about})
    return folder


def discard(folder: str | os.PathLike, name: str, *, kind: str) -> None:
    """Remove the file ``name`` of our own ``kind`` output ``folder`` (e.g. a result a rerun must not show)."""
    folder = Path(folder)
    if manifest_kind(folder) != kind or Path(name).name != name:
        raise OutputError(f"{folder / name}: not part of a {kind!r} output of this toolkit; refusing to remove it")
    (folder / name).unlink(missing_ok=True)


def claim_file(path: str | os.PathLike, *, flag: str, ours: Callable[[Path], bool],
               inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Check that ``path`` may be (over)written: missing, empty, or recognised by ``ours`` as our output."""
    path = Path(path)
    check_apart(path, inputs, flag=flag)
    check_not_inside_output(path, flag=flag)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; pass a file name as {flag}")
    if path.exists() and path.stat().st_size > 0 and not ours(path):
        raise OutputError(f"{path}: exists and was not written by this toolkit; nothing was touched. Pass a new "
                          f"file name as {flag}")


def aside_path(final: str | os.PathLike) -> Path:
    """Where ``final`` is built before it is swapped in: stable, so a rerun finds (and may resume) it."""
    return temp_path(final, stable=True)


def fresh_aside(final: str | os.PathLike) -> Path:
    """An empty folder to build ``final`` in (a leftover of an earlier, interrupted build is removed)."""
    check_not_current(final, flag="the output")
    aside = aside_path(final)
    if aside.exists():
        remove_temp(aside)
    aside.mkdir(parents=True)
    return aside


@contextmanager
def building(final: str | os.PathLike) -> Iterator[Path]:
    """A fresh aside folder for ``final`` for the block; removed again if the block fails (a failed build
    leaves nothing behind; a killed one leaves the aside, which the next build starts over)."""
    aside = fresh_aside(final)
    try:
        yield aside
    except BaseException:
        remove_temp(aside)
        raise


def swap_in(aside: str | os.PathLike, final: str | os.PathLike, kind: str, *, flag: str,
            ours: Callable[[Path], bool] | None = None) -> Path:
    """Put the finished ``aside`` folder at ``final``; an existing ``final`` must be our ``kind`` output.

    The old one is renamed aside and removed once the new one is in place; it is refused while holding anything
    neither its record nor the new build lists. The new one gets its record (:mod:`laconic_pyserini.owned`).
    """
    aside, final = Path(aside), Path(final)
    if not is_temp_name(aside.name):
        raise OutputError(f"{aside}: not a folder built aside by this toolkit")
    old = None
    if final.exists():
        if claim_folder(final, kind, flag=flag, ours=ours):
            check_rebuildable(final, flag=flag, also=listing(aside))
            old = temp_path(final.with_name(final.name + ".old"))
            os.replace(final, old)
        else:
            clean_temps(final)
    write_text_atomic(aside / RECORD, record_text(aside))
    try:
        os.replace(aside, final)  # onto a missing or empty folder
    except OSError as exc:
        if old is not None:
            os.replace(old, final)  # the old output goes back under its name
        raise OutputError(f"{final}: could not be replaced ({exc.strerror}); pass a new folder as {flag}") from None
    fsync_dir(final.parent)
    if (parent_record := nested_record(final.parent, final)) is not None:  # a cache inside an output of ours
        write_text_atomic(final.parent / RECORD, parent_record)
    if old is not None:
        _remove(old)
    return final


def remove_output(folder: str | os.PathLike, kind: str, *, ours: Callable[[Path], bool] | None = None) -> None:
    """Remove a whole ``kind`` output of ours (e.g. a checkpoint past the ones kept); anything else is refused."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not claim_folder(folder, kind, flag="the output", ours=ours):
        raise OutputError(f"{folder}: not a {kind!r} output of this toolkit; refusing to remove it")
    doomed = temp_path(folder.with_name(folder.name + ".old"))
    os.replace(folder, doomed)  # gone from its name at once, even if the removal below is interrupted
    _remove(doomed)


def remove_temp(path: str | os.PathLike) -> None:
    """Remove a temporary file or folder of this toolkit; anything else is refused."""
    path = Path(path)
    if not is_temp_name(path.name):
        raise OutputError(f"{path}: not a temporary name of this toolkit; refusing to remove it")
    if path.exists() or path.is_symlink():
        _remove(path)


def clean_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove this toolkit's temporary names directly in ``folder`` (lock files are :func:`locked`'s business)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if is_temp_name(entry.name) and not entry.name.endswith(LOCK_SUFFIX):
            _remove(entry)
            removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _lock_file(target: Path) -> Path:
    return target.parent / f"{TMP_PREFIX}{target.name}{LOCK_SUFFIX}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _read_lock(lock: Path) -> dict | None:
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _take(lock: Path, target: Path) -> bool:
    """Create the lock file, or take over a stale one; False when it vanished meanwhile (try again)."""
    me = {"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv[:8]}
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        holder = _read_lock(lock)
        if holder is None:
            return False
        pid, host = holder.get("pid"), holder.get("host")
        if isinstance(pid, int) and host == me["host"] and not _pid_alive(pid):
            logger.warning("%s: taking over the lock of process %d, which is no longer running", target, pid)
            stale = temp_path(lock.with_name(lock.name + ".stale"))
            try:
                os.replace(lock, stale)  # only one of several takers wins this rename
            except FileNotFoundError:
                return False
            _remove(stale)
            return False
        raise OutputError(f"{target}: another process is writing it (pid {pid} on {host}, lock {lock}); wait for "
                          f"it to finish, or pass another output. If no such process runs, delete {lock}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(me, f)
    return True


@contextmanager
def locked(target: str | os.PathLike) -> Iterator[Path]:
    """Hold the one-writer lock of ``target`` (a file or folder) for the block; yields the lock file."""
    target = Path(target)
    lock = _lock_file(target)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        if _take(lock, target):
            break
    else:
        raise OutputError(f"{target}: could not take its lock {lock} (other writers keep changing it); retry")
    try:
        yield lock
    finally:
        holder = _read_lock(lock)
        if holder and holder.get("pid") == os.getpid():
            _remove(lock)


def after_commit(committed: int) -> None:
    """Test hook, called by writers after each committed part (see the module docstring); free when unset."""
    stop, wait = os.environ.get(STOP_ENV), os.environ.get(WAIT_ENV)
    if stop and committed >= int(stop):
        print(f"{STOP_ENV}={stop}: exiting hard after {committed} committed part(s)", file=sys.stderr, flush=True)
        os._exit(137)
    if wait and committed == int(wait):
        print(f"{WAIT_ENV}={wait}: waiting for standard input to close", file=sys.stderr, flush=True)
        sys.stdin.read()
