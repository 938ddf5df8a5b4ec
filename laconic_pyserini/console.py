"""What a person at the terminal sees: stage lines, progress bars, and the JVM's chatter kept out of the way.

One rule decides whether bars are drawn: :func:`progress_enabled` -- when the console is a terminal, unless
``LACONIC_PROGRESS=0`` (never) or ``=1`` (always) says otherwise -- so CI logs stay quiet and a terminal shows rate
and ETA. :func:`captured` sends everything written to file descriptors 1 and 2 (Anserini's log4j2 lines, the
JVM's own warnings, library chatter) to a log file while it is open; the console (the terminal's stderr, saved
aside) still gets the stage lines and bars, and afterwards the Anserini warnings that matter, once each.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

PROGRESS_ENV = "LACONIC_PROGRESS"

_console: TextIO | None = None  # the terminal's stderr while fds 1/2 are captured; None: sys.stderr itself
_log: Path | None = None  # the file fds 1/2 append to while captured
_said: set[str] = set()  # warnings already shown on the console in this process

#: Lines on a captured fd that are warnings with a known cause and nothing for the user to do.
KNOWN_NOISE = (
    "You are running with Java 22 or later",  # Lucene 9 on a newer JVM: MMapDirectory still works
    "sun.misc.Unsafe",  # Lucene's MappedByteBuffer cleaner (JDK 23+ deprecation notice)
    "Please consider reporting this to the maintainers",
    "terminally deprecated method",
    "restricted method",  # JDK 22+ native-access notice for Lucene's native helpers
    "enable-native-access",
    "Use --enable-native-access",
)
#: Anserini's log4j2 warnings (``WARN  [main] class (File.java:1) - message``) and the JVM's (``WARNING: message``);
#: this package's own records are on the console already.
_WARNING = re.compile(r"\b(?:WARN|ERROR|FATAL) +\[[^]]*\][^-]*- (.*)|^(?:WARNING|SEVERE): (.*)")


def console() -> TextIO:
    """Where stage lines and bars go: the terminal's stderr, also while fds 1 and 2 are captured."""
    return _console if _console is not None else sys.stderr


def progress_enabled() -> bool:
    """Draw progress bars? ``LACONIC_PROGRESS=0/1`` decides; otherwise whether the console is a terminal."""
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if value in {"0", "false", "no", "off"}:
        return False
    if value in {"1", "true", "yes", "on"}:
        return True
    try:
        return console().isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def progress_bar(*, total: int | None, desc: str, unit: str = "doc", initial: int = 0, enabled: bool | None = None):
    """A tqdm bar on the console (rate and ETA); ``enabled=None`` asks :func:`progress_enabled`."""
    from tqdm import tqdm

    on = progress_enabled() if enabled is None else enabled
    # A terminal that reports no width (a fresh pseudo-terminal, some CI runners) would get an empty bar.
    sized = _columns() > 0
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not on, dynamic_ncols=sized,
                ncols=None if sized else 80, file=console(), leave=True)


def _columns() -> int:
    try:
        return os.get_terminal_size(console().fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def say(line: str) -> None:
    """One line on the console (a stage, a result), whatever fds 1 and 2 point at."""
    stream = console()
    print(line, file=stream, flush=True)


class ConsoleHandler(logging.StreamHandler):
    """A logging handler that writes to :func:`console` as it is when a record comes, not when it was made."""

    @property
    def stream(self):  # type: ignore[override]
        return console()

    @stream.setter
    def stream(self, _value) -> None:
        pass  # logging.StreamHandler.__init__ assigns one; the console is looked up per record instead


@contextlib.contextmanager
def log_file(path: str | os.PathLike, level: int = logging.INFO) -> Iterator[Path]:
    """Every log record of ``level`` and above that the loggers pass on also goes to ``path`` while the block runs.

    Logger levels stay as the caller set them (a CLI sets the root to INFO); a library caller's own handlers do
    not start hearing INFO records because a log file was opened.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def captured(path: str | os.PathLike | None, *, shown_as: str | os.PathLike | None = None) -> Iterator[Path | None]:
    """File descriptors 1 and 2 append to ``path`` while the block runs (``None``: nothing changes); yields the
    file they append to (an outer block's, when nested), or None.

    The JVM writes straight to the descriptors, so redirecting ``sys.stdout`` would not be enough. Nested blocks
    keep the outer capture. On leaving, the warnings among the captured lines that are not :data:`KNOWN_NOISE` are
    said once on the console, with the log's path (``shown_as``: where the log will be once the block's output is
    swapped into place).
    """
    global _console, _log
    if path is None or _console is not None:
        yield _log
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    start = os.fstat(log_fd).st_size
    _console = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    _log = path
    try:
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        _console.close()
        _console, _log = None, None
        _report_warnings(path, start, Path(shown_as) if shown_as is not None else path)


def _report_warnings(path: Path, start: int, shown_as: Path) -> None:
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", errors="replace")
    for line in text.splitlines():
        found = _WARNING.search(line)
        if not found or any(noise in line for noise in KNOWN_NOISE):
            continue
        message = (found.group(1) or found.group(2) or "").strip()
        if message not in _said:
            _said.add(message)
            say(f"warning: {message} (details in {shown_as})")


@contextlib.contextmanager
def counter_bar(log: Path | None, pattern: re.Pattern, *, total: int | None, desc: str,
                unit: str = "doc", every: float = 0.5) -> Iterator[None]:
    """A progress bar fed by a counter another program writes into ``log`` (a captured file): the bar shows the
    last ``pattern`` group 1 (digits, commas allowed) written since the block began, read again every ``every`` s
    and once more at the end.

    For work that runs in one blocking call (Anserini's indexer) the program's own counter is the only honest
    measure; the bar moves as often as the program reports. No log, or bars off: the block just runs.
    """
    import threading

    bar = progress_bar(total=total, desc=desc, unit=unit)
    if log is None or bar.disable:
        with bar:
            yield
        return
    offset, stop = log.stat().st_size if log.exists() else 0, threading.Event()

    def follow() -> None:
        nonlocal offset
        while True:
            stopping = stop.wait(every)
            with open(log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            cut = chunk.rfind(b"\n") + 1  # whole lines only; the rest is read next time
            offset += cut
            text = chunk[:cut].decode("utf-8", "replace")
            counts = [int(m.group(1).replace(",", "")) for m in pattern.finditer(text)]
            if counts and counts[-1] > bar.n:
                bar.update(counts[-1] - bar.n)
            if stopping:
                return

    thread = threading.Thread(target=follow, name="counter-bar", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()
