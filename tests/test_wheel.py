"""The package as a user installs it: a wheel built from this checkout, installed into a fresh virtual environment,
run from a folder outside the checkout with nothing of the checkout on the path. Encoder specs and recipes must
come from inside the installed package (``--encoder splade-tiny`` and ``--recipe beir`` by name)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _source_copy(target: Path) -> Path:
    """The checkout's files (tracked, and new ones git does not ignore) copied aside, so the build never reads a
    stale ``build/`` folder nor writes into the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


def outside_env() -> dict[str, str]:
    """The environment without the checkout on ``PYTHONPATH`` (nor a data root that points beside it)."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "LACONIC_DATA")}


def _venv(folder: Path, wheel: Path) -> Path:
    """A fresh venv with ``wheel`` installed (``--no-deps``) that then sees the test environment's installed
    dependencies (a ``.pth`` line naming its site-packages, written after the install so pip sees no other copy of
    this package: a venv made from a venv's python sees the base interpreter's packages, not the venv's) but not its
    editable install of this package (a plain path line runs no ``.pth`` file found there)."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(folder)], check=True,
                   env=outside_env())
    python = folder / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, env=outside_env())
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, env=outside_env()).stdout.strip()
    Path(purelib, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return python


def test_the_wheel_works_outside_the_checkout(tmp_path, scifact200, splade200):
    from laconic_pyserini import evaluate, load_qrels, load_topics, open_searcher, read_trec_run

    source = _source_copy(tmp_path / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("laconic_pyserini-*.whl"))
    python = _venv(tmp_path / "venv", wheel)
    work = tmp_path / "user"
    work.mkdir()
    env = outside_env()

    def run(*args: str) -> str:
        done = subprocess.run([str(python), *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    where = run("-c", "import laconic_pyserini.shipped as s; print(s.__file__); print(s.encoders_dir()); "
                      "print(s.recipes_dir())").split()
    assert all(Path(p).is_relative_to(tmp_path / "venv") for p in where), where
    run("-m", "laconic_pyserini.encode", "input", "--corpus", str(scifact200), "output", "--embeddings", "enc",
        "encoder", "--encoder", "splade-tiny")
    run("-m", "laconic_pyserini.index", "--input", "enc", "--index", "idx")
    run("-m", "laconic_pyserini.search", "--index", "idx", "--topics", str(scifact200), "--output", "run.txt",
        "--hits", "100")
    printed = dict(line.split("\t") for line in run("-m", "laconic_pyserini.eval", "--qrels", str(scifact200),
                                                    "--run", "run.txt", "-m", "nDCG@10").splitlines())
    listing = run("-m", "laconic_pyserini.reproduce", "--recipe", "beir", "--list")
    assert str(tmp_path / "venv") in listing.splitlines()[0] and "splade-tiny" in listing
    # The installed package's run is the checkout's, hit for hit, and so is its score.
    got = read_trec_run(work / "run.txt")
    with open_searcher(splade200["index"]) as ours:
        want = ours.batch_search(load_topics(scifact200, "test"), k=100)
    assert got == {qid: [tuple(hit) for hit in hits] for qid, hits in want.items() if hits}
    expected = evaluate(load_qrels(scifact200, "test"), got, ["nDCG@10"])["nDCG@10"]
    assert float(printed["nDCG@10"]) == round(expected, 4)
