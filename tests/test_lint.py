"""The lint rule set of pyproject.toml ([tool.ruff]) holds for the package, the tests and the benchmarks."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0, f"ruff is not installed in this environment: pip install -e .[dev]\n{proc.stderr}"
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                           "laconic_pyserini", "tests", "benchmarks"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, f"ruff check found problems (fix them; see [tool.ruff] in pyproject.toml):\n" \
                                 f"{proc.stdout}{proc.stderr}"
    assert "All checks passed" in proc.stdout
