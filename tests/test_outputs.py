"""A command writes only what it owns (``laconic_pyserini.outputs``): refusals that keep every file, locks, repair.

The data-loss cases are run through the CLIs exactly as a user types them (subprocess, real splade-tiny, real
SciFact lines, real Anserini where an index is built); each must end in exit status 2 with one ``error:`` line
naming the folder and the option to change, and leave every file that was there byte-identical.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import pytest

from conftest import REPO, model_dir
from laconic_pyserini import outputs
from laconic_pyserini.encode import encode_corpus, read_manifest
from laconic_pyserini.outputs import OutputError

SHORT = 32
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))


@pytest.fixture(scope="module")
def splade():
    model_dir("splade-tiny")
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec

    return load_sparse_encoder(load_spec("splade-tiny", max_length=SHORT))


def _corpus(folder: Path, data_root: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.jsonl"
    with open(data_root / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        path.write_text("".join(islice(f, n)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def enc(tmp_path_factory, data_root, splade) -> Path:
    """A small encoded collection (30 SciFact documents, 3 parts)."""
    work = tmp_path_factory.mktemp("enc")
    corpus = _corpus(work / "data", data_root, 30)
    encode_corpus(corpus, work / "enc", encoder=splade, part_size=10, batch_size=8, progress=False)
    return work / "enc"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(module: str, *args: str | Path, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True)


def _assert_refused(proc, folder: str, flag: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, proc.stderr[-3000:]
    assert folder in error[0] and flag in error[0], error[0]


# ------------------------------------------------------------------------------------------------ data loss (row 1)


def _thesis(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("\\documentclass{article} x\n")
    return folder


def _case_index_over_foreign_folder(tmp: Path, enc: Path, data_root: Path):
    _thesis(tmp / "v")
    return ["laconic_pyserini.index", "--input", enc, "--index", "v"], tmp, "v", "--index", tmp


def _case_index_over_its_input(tmp: Path, enc: Path, data_root: Path):
    return ["laconic_pyserini.index", "--index", enc, "--input", enc], tmp, str(enc), "--index", enc


def _case_index_into_parent(tmp: Path, enc: Path, data_root: Path):
    cwd = tmp / "parent" / "child"
    cwd.mkdir(parents=True)
    (tmp / "parent" / "notes.md").write_text("keep me\n")
    return ["laconic_pyserini.index", "--input", enc, "--index", ".."], cwd, "..", "--index", tmp / "parent"


def _case_bm25_into_foreign_folder(tmp: Path, enc: Path, data_root: Path):
    _thesis(tmp / "v")
    corpus = _corpus(tmp / "beir", data_root, 10)
    return (["laconic_pyserini.index", "--bm25", "--input", corpus.parent, "--index", "v"], tmp, "v", "--index",
            tmp)


def _case_dense_over_foreign_folder(tmp: Path, enc: Path, data_root: Path):
    _thesis(tmp / "v")
    corpus = _corpus(tmp / "data", data_root, 10)
    return (["laconic_pyserini.encode.dense", "--corpus", corpus, "--encoder", "minilm", "--output", "v"], tmp, "v",
            "--output", tmp)


def _case_encode_into_folder_without_manifest(tmp: Path, enc: Path, data_root: Path):
    corpus = _corpus(tmp / "data", data_root, 10)
    (tmp / "v" / "vectors").mkdir(parents=True)
    (tmp / "v" / "vectors" / "mine.tmp").write_text("a user's file that happens to end in .tmp\n")
    return (["laconic_pyserini.encode", "--corpus", corpus, "--embeddings", "v", "--encoder", "splade-tiny",
             "--max-length", str(SHORT), "--no-progress"], tmp, "v", "--embeddings", tmp)


def _case_encode_into_the_corpus_folder(tmp: Path, enc: Path, data_root: Path):
    corpus = _corpus(tmp / "data", data_root, 10)
    return (["laconic_pyserini.encode", "--corpus", corpus, "--embeddings", corpus.parent, "--encoder",
             "splade-tiny", "--max-length", str(SHORT), "--no-progress"], tmp, str(corpus.parent), "--embeddings",
            tmp)


def _case_dense_over_an_encoding(tmp: Path, enc: Path, data_root: Path):
    corpus = _corpus(tmp / "data", data_root, 10)
    return (["laconic_pyserini.encode.dense", "--corpus", corpus, "--encoder", "minilm", "--output", enc], tmp,
            str(enc), "--output", enc)


DATA_LOSS = {name[len("_case_"):]: case for name, case in dict(globals()).items() if name.startswith("_case_")}


@pytest.mark.parametrize("case", sorted(DATA_LOSS))
def test_a_folder_that_is_not_ours_is_refused_and_kept(case, tmp_path, enc, data_root):
    (tmp_path / "t").mkdir()
    command, cwd, folder, flag, watched = DATA_LOSS[case](tmp_path / "t", enc, data_root)
    before, enc_before = _snapshot(watched), _snapshot(enc)
    proc = _cli(*command, cwd=cwd)
    _assert_refused(proc, folder, flag)
    assert "pass " in proc.stderr.lower()  # what to do instead
    assert _snapshot(watched) == before
    assert _snapshot(enc) == enc_before


def test_an_index_of_ours_is_rebuilt_in_place_and_other_kinds_are_refused(tmp_path, enc):
    """Rebuilding over an index whose manifest says it is ours, of the same kind, replaces it: that is how an
    index is rebuilt. An index of another kind, or an encoding, is refused."""
    from laconic_pyserini.index.impact import build_impact_index
    from laconic_pyserini.index.lucene import lucene_document_count

    index = build_impact_index(enc, tmp_path / "idx")
    first = json.loads((index / "manifest.json").read_text())
    (index / "manifest.json").write_text(json.dumps({**first, "documents": -1}))  # mark the old one
    again = build_impact_index(enc, tmp_path / "idx")
    assert json.loads((again / "manifest.json").read_text())["documents"] == 30 == lucene_document_count(again)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(outputs.TMP_PREFIX)]  # no debris beside it
    (tmp_path / "bm25").mkdir()
    (tmp_path / "bm25" / "manifest.json").write_text('{"kind": "bm25"}')
    with pytest.raises(OutputError, match=r"holds this toolkit's 'bm25' output, not 'impact'; pass another folder as --index"):
        build_impact_index(enc, tmp_path / "bm25")


# ------------------------------------------------------------------------------------------------ lock (row 8)


def _encode_cli(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "laconic_pyserini.encode", "--corpus", str(corpus), "--embeddings", str(out),
            "--part-size", "10", "--encoder", "splade-tiny", "--max-length", str(SHORT), "--batch-size", "8",
            "--no-progress"]


def test_a_second_encode_into_the_same_folder_is_refused(tmp_path, data_root, splade):
    corpus = _corpus(tmp_path / "data", data_root, 30)
    out = tmp_path / "out"
    # The first encode stops after its first committed part and waits for its stdin to close (the test hook):
    # the second one starts while the first is certainly running, with no timing involved.
    first = subprocess.Popen(_encode_cli(corpus, out), env=dict(ENV, LACONIC_TEST_WAIT_AFTER_PARTS="1"),
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while first.poll() is None and time.monotonic() < deadline:
            if (out / "manifest.json").is_file() and json.loads((out / "manifest.json").read_text())["parts"]:
                break
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read()[-3000:]
        before = _snapshot(out)
        second = subprocess.run(_encode_cli(corpus, out), env=ENV, capture_output=True, text=True)
        _assert_refused(second, str(out), "another output")
        assert f"pid {first.pid}" in second.stderr
        assert _snapshot(out) == before
    finally:
        first.stdin.close()
        first.wait(timeout=600)
    assert first.returncode == 0, first.stderr.read()[-3000:]
    reference = encode_corpus(corpus, tmp_path / "reference", encoder=splade, part_size=10, batch_size=8,
                              progress=False)
    assert _snapshot(out / "vectors") == _snapshot(tmp_path / "reference" / "vectors")
    # The same manifest, apart from each run's own record of the kernels it ran (its CPU probe's rates differ).
    written, expected = read_manifest(out).to_dict(), reference.to_dict()
    runs = [[k["first_part"] for k in manifest.pop("kernels")] for manifest in (written, expected)]
    assert runs == [[0], [0]]
    assert written == expected


def test_a_stale_lock_is_taken_over_and_a_live_one_is_not(tmp_path):
    target = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / f"{outputs.TMP_PREFIX}out{outputs.LOCK_SUFFIX}"
    import socket

    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with outputs.locked(target) as held:
        assert json.loads(held.read_text())["pid"] == os.getpid()
        with pytest.raises(OutputError, match=rf"another process is writing it \(pid {os.getpid()}"):
            with outputs.locked(target):
                pass
    assert not lock.exists()
    # A lock of another host cannot be checked: it is respected, and the message says which file to delete.
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(OutputError, match="If no such process runs, delete"):
        with outputs.locked(target):
            pass
    assert lock.exists()


# ------------------------------------------------------------------------------------------------ repair (row 9)


def test_a_rerun_repairs_only_the_damaged_parts(tmp_path, data_root, splade, caplog):
    corpus = _corpus(tmp_path / "data", data_root, 30)
    out = tmp_path / "out"
    encode_corpus(corpus, out, encoder=splade, part_size=10, batch_size=8, progress=False)
    intact = _snapshot(out)
    parts = sorted((out / "vectors").iterdir())
    assert len(parts) == 3
    untouched_mtime = parts[0].stat().st_mtime_ns
    parts[1].write_bytes(parts[1].read_bytes().replace(b'"vector": {"', b'"vector": {"x": 1, "', 1))
    parts[2].unlink()
    (out / "vectors" / "notes.tmp").write_text("not ours: kept\n")
    with caplog.at_level("WARNING"):
        manifest = encode_corpus(corpus, out, encoder=splade, part_size=10, batch_size=8, progress=False)
    assert "2 damaged or missing part(s)" in caplog.text
    assert manifest.complete
    repaired = _snapshot(out)
    assert repaired.pop("vectors/notes.tmp") == b"not ours: kept\n"
    # The manifest is the same apart from the repair run's own kernel record (from the first part it rewrote).
    written, expected = (json.loads(files.pop("manifest.json")) for files in (repaired, intact))
    assert [k["first_part"] for k in written.pop("kernels")] == [0, 1]
    expected.pop("kernels")
    assert written == expected
    assert repaired == intact  # every part file byte-identical to the undamaged run
    assert parts[0].stat().st_mtime_ns == untouched_mtime  # the intact part was not re-encoded


# ------------------------------------------------------------------------------------------------ small pieces


def test_ownership_rules(tmp_path):
    assert not outputs.claim_folder(tmp_path / "new", "impact", flag="--index")
    (tmp_path / "fresh" / "sub").mkdir(parents=True)
    (tmp_path / "fresh" / f"{outputs.TMP_PREFIX}123-x").write_text("debris")
    assert not outputs.claim_folder(tmp_path / "fresh", "impact", flag="--index")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "manifest.json").write_text('{"kind": "impact"}')
    assert outputs.claim_folder(tmp_path / "ours", "impact", flag="--index")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "manifest.json").write_text('{"name": "someone else\'s"}')
    with pytest.raises(OutputError, match=r"theirs: not empty and not an output of this toolkit of kind 'impact'.*as --index"):
        outputs.claim_folder(tmp_path / "theirs", "impact", flag="--index")
    for output, given, how in ((tmp_path / "a", tmp_path / "a", "is"), (tmp_path / "a" / "b", tmp_path / "a",
                                                                        "is inside"),
                               (tmp_path, tmp_path / "a", "contains")):
        with pytest.raises(OutputError, match=f"this output {how} the input"):
            outputs.check_apart(output, [given], flag="--index")
    with pytest.raises(OutputError, match="not a temporary name"):
        outputs.remove_temp(tmp_path / "ours")
    assert (tmp_path / "ours" / "manifest.json").exists()
    removed = outputs.clean_temps(tmp_path / "fresh")
    assert [p.name for p in removed] == [f"{outputs.TMP_PREFIX}123-x"] and (tmp_path / "fresh" / "sub").is_dir()


def test_atomic_files_and_run_files(tmp_path):
    from laconic_pyserini.run import write_trec_run

    target = tmp_path / "a.json"
    outputs.write_json_atomic(target, {"a": 1})
    with pytest.raises(ZeroDivisionError):
        with outputs.atomic_open(target) as f:
            f.write("half")
            raise ZeroDivisionError("a crash halfway through the write")
    assert json.loads(target.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["a.json"]
    thesis = _thesis(tmp_path / "paper") / "thesis.tex"
    with pytest.raises(OutputError, match="thesis.tex: exists and was not written by this toolkit.*--output"):
        write_trec_run({"q": [("d", 1.0)]}, thesis)
    assert thesis.read_text().startswith("\\documentclass")
    run = write_trec_run({"q": [("d", 1.0)]}, tmp_path / "run.trec")
    write_trec_run({"q": [("e", 2.0)]}, run)  # an earlier run is ours to replace
    assert run.read_text() == "q Q0 e 1 2.000000 laconic\n"


def test_a_compare_output_that_is_not_ours_is_refused(tmp_path, data_root):
    from laconic_pyserini.compare import compare

    _thesis(tmp_path / "v")
    with pytest.raises(OutputError, match=r"v: not empty and not an output of this toolkit of kind 'compare'.*--output"):
        compare(data_root / "scifact", ["bm25"], tmp_path / "v")
    assert [p.name for p in (tmp_path / "v").iterdir()] == ["thesis.tex"]


def test_only_the_output_module_removes_anything():
    """`grep -rn "rmtree|unlink|os.remove|rmdir" laconic_pyserini` shows only outputs.py."""
    pattern = re.compile(r"rmtree|unlink|os\.remove|rmdir")
    package = REPO / "laconic_pyserini"
    hits = [f"{path.relative_to(REPO)}:{number}: {line.strip()}" for path in sorted(package.rglob("*.py"))
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
            if pattern.search(line) and path.name != "outputs.py"]
    assert hits == []


def test_nothing_unpickles_checkpoint_files():
    """`weights_only=False` appears nowhere in the package (the hardening branch removes the last one)."""
    hits = [str(path.relative_to(REPO)) for path in sorted((REPO / "laconic_pyserini").rglob("*.py"))
            if "weights_only=False" in path.read_text(encoding="utf-8")]
    assert hits == []


def test_a_rebuild_replaces_only_what_the_record_lists(tmp_path):
    """swap_in records what a build wrote; a cache the toolkit builds inside it (Seismic's, in an impact index) is
    added to that record; a rebuild replaces both, and is refused while anything else is inside."""
    def build(final: Path, files: dict[str, str], kind: str) -> Path:
        with outputs.building(final) as aside:  # removed again if the swap is refused
            for name, text in {"manifest.json": json.dumps({"kind": kind}), **files}.items():
                (aside / name).parent.mkdir(parents=True, exist_ok=True)
                (aside / name).write_text(text)
            return outputs.swap_in(aside, final, kind, flag="--index")

    index = build(tmp_path / "idx", {"segments_1": "a", "logs/index.log": "b"}, "impact")
    build(index / "seismic", {"index.bin": "c"}, "seismic")
    recorded = json.loads((index / ".laconic-written.json").read_text())["entries"]
    assert {"logs/", "logs/index.log", "manifest.json", "segments_1", "seismic/", "seismic/index.bin",
            "seismic/.laconic-written.json"} <= set(recorded)
    build(index, {"segments_2": "d"}, "impact")  # the old index and its cache go, as the record says
    assert sorted(p.name for p in index.iterdir()) == [".laconic-written.json", "manifest.json", "segments_2"]
    (index / "NOTES.md").write_text("mine")
    (index / "mine").mkdir()
    with pytest.raises(OutputError, match=r"holds what this toolkit did not write \(NOTES.md, mine/\).*Move"):
        build(index, {"segments_3": "e"}, "impact")
    assert (index / "segments_2").is_file() and (index / "NOTES.md").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(outputs.TMP_PREFIX)]
    with pytest.raises(OutputError, match="inside .*idx, an output of this toolkit"):
        outputs.claim_file(index / "run.txt", flag="--output", ours=lambda path: True)
