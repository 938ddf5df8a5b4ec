"""The toolkit's one error path: every error a user can fix derives from :class:`LaconicError`.

Each CLI's ``main`` is wrapped with :func:`cli`, which turns any LaconicError — from whichever module raised it —
into one line ``error: <message>`` on stderr and exit status 2, never a traceback. Because every toolkit error
class derives from this one base (imported once as ``laconic_pyserini.errors``), running a module with
``python -m`` (where the module's own classes are copies living in ``__main__``) cannot let an error slip past.

This module imports nothing of the toolkit, so anything may import it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

EXIT_USAGE = 2


class LaconicError(Exception):
    """Bad input or a bad environment the user can fix; the message names the file (and line) and the fix."""


class UsageError(LaconicError, ValueError):
    """A command-line value out of range or contradicting another, found before any model or JVM loads."""


class DataError(LaconicError, ValueError):
    """Bad input data; the message names the file, the line and the fix."""

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str, fix: str = "") -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        message = f"{where}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)
        self.path = str(path)
        self.line = line


Main = TypeVar("Main", bound=Callable[..., int])


def report(exc: BaseException) -> int:
    """Print ``error: …`` for a toolkit or file-system error and return the exit status 2."""
    print(f"error: {describe(exc)}", file=sys.stderr)
    return EXIT_USAGE


def describe(exc: BaseException) -> str:
    """One line for an error: a LaconicError's own message; ``PATH: reason`` for an OSError naming a file."""
    if isinstance(exc, OSError) and not isinstance(exc, LaconicError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return " ".join(str(exc).split("\n")) or type(exc).__name__


def cli(main: Main) -> Main:
    """Decorate a CLI ``main(argv) -> int``: toolkit errors and file-system errors become ``error: …``, exit 2.

    File-system errors (a read-only folder, an output that is a directory, a full disk) name their file and are
    the user's to fix, so they take the same path; any other exception is a bug and keeps its traceback.
    """

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except LaconicError as exc:
            return report(exc)
        except OSError as exc:
            if exc.filename is None:
                raise
            return report(exc)

    return wrapped  # type: ignore[return-value]


def require_at_least(minimum: int, values: Mapping[str, int | float | None]) -> None:
    """Raise UsageError unless every given option (``{"--hits": 0}``) is ``None`` or at least ``minimum``."""
    for flag, value in values.items():
        if value is not None and value < minimum:
            raise UsageError(f"{flag} {value}: must be at least {minimum}")


def require_output_file(flag: str, path: str | os.PathLike | None) -> None:
    """Raise UsageError when an output file cannot be written: it names a directory, or the folder that would hold
    it (its nearest existing ancestor) is a file or not writable. Checked before any model or JVM loads."""
    if path is None:
        return
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a directory; pass the path of a file to write")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise UsageError(f"{flag} {path}: {folder} is a file, not a folder; choose another {flag}")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{flag} {path}: the folder {folder} is not writable; choose another {flag}")
