"""Bad input, tried as a user would: every case runs a CLI (``python -m laconic_pyserini.X …``) in a scratch folder.

Each case must end in exit status 2, one line ``error: …`` (the last line of stderr, no traceback) that names the
file (and the line where there is one) or the option at fault, and it must leave every file that existed before
byte-identical and add nothing. Inputs are small files written from real SciFact lines; the few cases that need an
index search a 20-document SciFact collection encoded with splade-tiny, built once per module. Argument-range cases
name an index that does not exist, so they pass only when the range is checked before anything is loaded.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import model_dir

REPO = Path(__file__).resolve().parent.parent


def _scifact_lines(data_root: Path, n: int) -> list[str]:
    with open(data_root / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.update(extra)
    return env


def _cli(module: str, argv: list[str], cwd: Path, env: dict[str, str], timeout: int = 600):
    return subprocess.run([sys.executable, "-m", f"laconic_pyserini.{module}", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_root):
    """A lazily built 20-document SciFact collection (splade-tiny) and its impact index, through the CLIs."""
    built: dict[str, Path] = {}

    def get() -> dict[str, Path]:
        if built:
            return built
        model_dir("splade-tiny")
        work = tmp_path_factory.mktemp("tiny")
        (work / "corpus.jsonl").write_text("\n".join(_scifact_lines(data_root, 20)) + "\n", encoding="utf-8")
        for module, argv in (("encode", ["--corpus", "corpus.jsonl", "--embeddings", "encoded",
                                         "--encoder", "splade-tiny", "--no-progress"]),
                             ("index", ["--input", "encoded", "--index", "index"])):
            proc = _cli(module, argv, work, _env())
            assert proc.returncode == 0, proc.stderr[-3000:]
        built.update(encoded=work / "encoded", index=work / "index")
        return built

    return get


class Ctx:
    """What a case may use: its scratch folder, real SciFact lines, the tiny index, extra environment."""

    def __init__(self, tmp: Path, data_root: Path, tiny: Callable[[], dict[str, Path]], outside: Path) -> None:
        self.tmp, self.data_root, self._tiny, self.outside = tmp, data_root, tiny, outside
        self.env: dict[str, str] = {}
        self.read_only: list[Path] = []

    def write(self, name: str, text: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return name

    def corpus(self, name: str = "corpus.jsonl", bad: str | None = None, at: int = 3) -> str:
        """Five real SciFact documents with ``bad`` as line ``at``."""
        lines = _scifact_lines(self.data_root, 5)
        if bad is not None:
            lines[at - 1] = bad
        return self.write(name, "\n".join(lines) + "\n")

    def doc_with_id(self, raw_id: str) -> str:
        return '{"_id": ' + raw_id + ', "title": "t", "text": "Myelodysplastic syndromes."}'

    def index(self) -> str:
        return str(self._tiny()["index"])

    def run(self, module: str, argv: list[str]) -> None:
        """Run a CLI that must succeed (building what a case then misuses)."""
        proc = _cli(module, argv, self.tmp, _env(**self.env))
        assert proc.returncode == 0, proc.stderr[-3000:]

    def bm25_index(self, name: str = "ix") -> str:
        """A BM25 index of five SciFact documents, built here through the CLI."""
        self.run("index", ["--bm25", "--input", self.corpus(), "--index", name])
        return name


CASES: dict[str, Callable[[Ctx], tuple[str, list[str], list[str]]]] = {}


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


# ---------------------------------------------------------------- argument ranges, before any model or JVM loads
for _flag, _value in (("--hits", "0"), ("--hits", "-5"), ("--threads", "0"), ("--batch-size", "0"),
                      ("--query-cut", "0")):
    case(f"search {_flag} {_value}")(lambda c, f=_flag, v=_value: (
        "search", ["--index", "no-index", "--topics", "scifact", "--output", "run.txt", f, v], [f"{f} {v}"]))

for _module, _flag, _base in (
        ("encode", "--batch-size", ["--corpus", "scifact", "--embeddings", "enc", "--encoder", "splade-tiny"]),
        ("encode", "--max-length", ["--corpus", "scifact", "--embeddings", "enc", "--encoder", "splade-tiny"]),
        ("encode", "--part-size", ["--corpus", "scifact", "--embeddings", "enc", "--encoder", "splade-tiny"]),
        ("encode.query", "--batch-size", ["--topics", "scifact", "--output", "q.jsonl", "--encoder", "splade-tiny"]),
        ("encode.query", "--max-length", ["--topics", "scifact", "--output", "q.jsonl", "--encoder", "splade-tiny"]),
        ("encode.dense", "--batch-size", ["--corpus", "scifact", "--output", "dense", "--encoder", "minilm"]),
        ("encode.dense", "--max-length", ["--corpus", "scifact", "--output", "dense", "--encoder", "minilm"]),
        ("index", "--threads", ["--bm25", "--input", "scifact", "--index", "ix"]),
        ("compare", "--hits", ["--dataset", "scifact", "--output", "report"]),
        ("train.mine", "--depth", ["--dataset", "scifact", "--output", "neg.jsonl", "--index", "no-index"]),
        ("train.vector_eval", "--max-length", ["--encoder", "splade-tiny", "--dataset", "scifact", "--output", "ve"])):
    case(f"{_module} {_flag} 0")(lambda c, m=_module, f=_flag, b=_base: (m, [*b, f, "0"], [f"{f} 0"]))


@case("search --output names a directory")
def _(c):
    (c.tmp / "runs").mkdir()
    c.write("runs/keep.txt", "mine\n")
    return "search", ["--index", "no-index", "--topics", "scifact", "--output", "runs"], ["--output runs", "directory"]


@case("encode.query --output names a directory")
def _(c):
    (c.tmp / "q").mkdir()
    return "encode.query", ["--topics", "scifact", "--encoder", "splade-tiny", "--output", "q"], ["--output q"]


@case("search --output in a read-only folder")
def _(c):
    (c.tmp / "locked").mkdir()
    c.read_only.append(c.tmp / "locked")
    return "search", ["--index", "no-index", "--topics", "scifact", "--output", "locked/run.txt"], \
        ["locked/run.txt", "not writable"]


@case("search --output under a file")
def _(c):
    c.write("afile", "x\n")
    return "search", ["--index", "no-index", "--topics", "scifact", "--output", "afile/run.txt"], ["afile"]


@case("eval -m nDGC@10")
def _(c):
    c.write("run.txt", "1 Q0 4983 1 2.0 x\n")
    return "eval", ["--qrels", "scifact", "--run", "run.txt", "-m", "nDGC@10"], \
        ["-m nDGC@10", "did you mean nDCG@10", "valid measures", "RR"]


@case("eval -m nDCG@x")
def _(c):
    c.write("run.txt", "1 Q0 4983 1 2.0 x\n")
    return "eval", ["--qrels", "scifact", "--run", "run.txt", "-m", "nDCG@x"], ["-m nDCG@x", "valid measures"]


# ---------------------------------------------------------------- ids: TREC-safe where they enter
BAD_IDS = {"space": '"a b"', "tab": '"a\\tb"', "newline": '"a\\nb"', "padded": '" pad "', "empty": '""',
           "true": "true", "array": "[1, 2]", "object": '{"a": 1}', "float": "1.5", "null": "null"}

for _kind, _raw in BAD_IDS.items():
    case(f"corpus doc id {_kind}")(lambda c, raw=_raw: (
        "index", ["--bm25", "--input", c.corpus(bad=c.doc_with_id(raw)), "--index", "ix"], ["corpus.jsonl:3"]))
    case(f"topics jsonl query id {_kind}")(lambda c, raw=_raw: (
        "encode.query", ["--topics", c.write("topics.jsonl", '{"_id": "1", "text": "a"}\n{"_id": ' + raw
                                                + ', "text": "b"}\n'),
                         "--encoder", "splade-tiny", "--output", "q.jsonl"], ["topics.jsonl:2"]))
    case(f"pre-encoded query id {_kind}")(lambda c, raw=_raw: (
        "search", ["--index", c.index(), "--output", "run.txt", "--pre-encoded",
                   c.write("q.jsonl", '{"id": "1", "vector": {"\\u0120cell": 3}}\n{"id": ' + raw
                           + ', "vector": {"\\u0120cell": 3}}\n')], ["q.jsonl:2"]))

for _kind, _qid in (("space", "1 2"), ("padded", " 1"), ("empty", "")):
    case(f"topics tsv query id {_kind}")(lambda c, q=_qid: (
        "encode.query", ["--topics", c.write("topics.tsv", f"1\ta\n{q}\tb\n"), "--encoder", "splade-tiny",
                         "--output", "q.jsonl"], ["topics.tsv:2"]))
    case(f"pre-encoded tsv query id {_kind}")(lambda c, q=_qid: (
        "search", ["--index", c.index(), "--output", "run.txt", "--pre-encoded",
                   c.write("q.tsv", f"1\tĠcell\n{q}\tĠcell\n")], ["q.tsv:2"]))
    case(f"qrels query id {_kind}")(lambda c, q=_qid: (
        "eval", ["--qrels", c.write("qrels.tsv", f"query-id\tcorpus-id\tscore\n1\t4983\t1\n{q}\t5836\t1\n"),
                 "--run", c.write("run.txt", "1 Q0 4983 1 2.0 x\n")], ["qrels.tsv:3"]))

case("qrels doc id with a space")(lambda c: (
    "eval", ["--qrels", c.write("qrels.tsv", "query-id\tcorpus-id\tscore\n1\t49 83\t1\n"),
             "--run", c.write("run.txt", "1 Q0 4983 1 2.0 x\n")], ["qrels.tsv:2", "'49 83'"]))

# ---------------------------------------------------------------- runs
case("run repeats a (query, doc) pair")(lambda c: (
    "eval", ["--qrels", "scifact", "--run", c.write("run.txt", "1 Q0 4983 1 2.0 x\n1 Q0 5836 2 1.5 x\n"
                                                              "1 Q0 4983 3 1.0 x\n")], ["run.txt:3", "line 1"]))
case("run with five columns")(lambda c: (
    "eval", ["--qrels", "scifact", "--run", c.write("run.txt", "1 Q0 4983 1 2.0 x\n1 Q0 5836 2 1.5\n")],
    ["run.txt:2"]))
case("run score not a number")(lambda c: (
    "eval", ["--qrels", "scifact", "--run", c.write("run.txt", "1 Q0 4983 1 high x\n")], ["run.txt:1"]))
case("run file missing")(lambda c: ("eval", ["--qrels", "scifact", "--run", "nope.txt"], ["nope.txt"]))
case("qrels grade not a number")(lambda c: (
    "eval", ["--qrels", c.write("qrels.tsv", "1\t4983\tyes\n"), "--run", c.write("run.txt", "1 Q0 4983 1 2 x\n")],
    ["qrels.tsv:1"]))

# ---------------------------------------------------------------- corpora
case("corpus line not JSON")(lambda c: (
    "index", ["--bm25", "--input", c.corpus(bad='{"_id": "x", "text": '), "--index", "ix"], ["corpus.jsonl:3"]))
case("corpus line not UTF-8")(lambda c: (
    "index", ["--bm25", "--input", c.write("corpus.jsonl", b'{"_id": "1", "text": "a"}\n{"_id": "2", "text": "\xff"}\n'),
              "--index", "ix"], ["corpus.jsonl:2", "UTF-8"]))
case("corpus duplicate id")(lambda c: (
    "index", ["--bm25", "--input", c.corpus(bad=_scifact_lines(c.data_root, 1)[0]), "--index", "ix"],
    ["corpus.jsonl:3", "duplicate"]))
case("corpus doc without text")(lambda c: (
    "index", ["--bm25", "--input", c.corpus(bad='{"_id": "x1", "title": "t"}'), "--index", "ix"], ["corpus.jsonl:3"]))


def _truncated_gz(c: Ctx) -> str:
    data = gzip.compress(("\n".join(_scifact_lines(c.data_root, 5)) + "\n").encode("utf-8"))
    return c.write("corpus.jsonl.gz", data[: len(data) - 40])


case("truncated .gz corpus, index")(lambda c: (
    "index", ["--bm25", "--input", _truncated_gz(c), "--index", "ix"], ["corpus.jsonl.gz", "truncated"]))
case("truncated .gz corpus, encode")(lambda c: (
    "encode", ["--corpus", _truncated_gz(c), "--embeddings", "enc", "--encoder", "splade-tiny"],
    ["corpus.jsonl.gz", "truncated"]))
case("empty corpus, index --bm25")(lambda c: (
    "index", ["--bm25", "--input", c.write("empty.jsonl", ""), "--index", "ix"], ["empty.jsonl", "no documents"]))
case("blank-line corpus, encode")(lambda c: (
    "encode", ["--corpus", c.write("empty.jsonl", "\n  \n"), "--embeddings", "enc", "--encoder", "splade-tiny"],
    ["empty.jsonl", "no documents"]))
case("empty corpus, encode.dense")(lambda c: (
    "encode.dense", ["--corpus", c.write("empty.jsonl", ""), "--output", "dense", "--encoder", "minilm"],
    ["empty.jsonl", "no documents"]))


@case("dataset neither local nor reachable")
def _(c):
    # A proxy on a closed local port: ir_datasets' download fails at once, and nothing leaves this machine.
    c.env.update(LACONIC_DATA=str(c.tmp / "datasets"), HTTPS_PROXY="http://127.0.0.1:9",
                 HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="", IR_DATASETS_HOME=str(c.outside / "ir_datasets"))
    (c.tmp / "datasets").mkdir()
    return "index", ["--bm25", "--input", "fiqa", "--index", "ix"], ["fiqa", "LACONIC_DATA", "not reachable"]


case("unknown dataset name")(lambda c: (
    "eval", ["--qrels", "no-such-dataset", "--run", c.write("run.txt", "1 Q0 4983 1 2 x\n")], ["no-such-dataset"]))

# ---------------------------------------------------------------- index folders, recipes, configs
case("index --input missing folder")(lambda c: ("index", ["--input", "no-encoding", "--index", "ix"],
                                                ["no-encoding"]))
case("index --input a corpus, not an encoding")(lambda c: (
    "index", ["--input", c.corpus(), "--index", "ix"], ["corpus.jsonl"]))
case("search --index missing")(lambda c: (
    "search", ["--index", "no-index", "--topics", "scifact", "--output", "run.txt"], ["no-index"]))
case("search --bm25 on an impact index")(lambda c: (
    "search", ["--bm25", "--index", c.index(), "--topics", "scifact", "--output", "run.txt"], ["--bm25"]))
case("recipe not UTF-8")(lambda c: (
    "reproduce", ["--recipe", c.write("bad.yaml", b"name: x\nconditions: [\xff]\n"), "--list"], ["bad.yaml:2", "UTF-8"]))
case("index recipe not UTF-8")(lambda c: (
    "index", ["--recipe", c.write("bad.yaml", b"name: x\n\xfe: 1\n"), "--condition", "splade-tiny", "--dataset",
              "scifact"], ["bad.yaml:2", "UTF-8"]))
case("index recipe with an unknown key")(lambda c: (
    "index", ["--recipe", c.write("r.yaml", b"kind: bm25\nfield: flat\n"), "--dataset", "scifact"],
    ["r.yaml", "unknown key(s) ['field'] for a bm25 recipe"]))
case("reproduction recipe given as an index recipe")(lambda c: (
    "index", ["--recipe", str(REPO / "eval" / "beir.yaml"), "--dataset", "scifact"],
    ["is a reproduction recipe", "--condition C", "index_recipes"]))
case("training config not UTF-8")(lambda c: (
    "train", ["--config", c.write("bad.yaml", b"model: {}\n# \xe9\n")], ["bad.yaml:2", "UTF-8"]))
case("training config missing")(lambda c: ("train", ["--config", "none.yaml"], ["none.yaml"]))
case("reproduce --var without =")(lambda c: (
    "reproduce", ["--recipe", str(REPO / "eval" / "beir.yaml"), "--var", "threads", "--dry-run"], ["--var"]))
case("unknown encoder")(lambda c: (
    "encode", ["--corpus", c.corpus(), "--embeddings", "enc", "--encoder", "no-such-encoder"], ["no-such-encoder"]))


# ---------------------------------------------------------------- outputs stay the user's
@case("index --bm25 rebuilt over our index holding a user's note and folder")
def _(c):
    index = c.bm25_index()
    c.write(f"{index}/NOTES.md", "mine\n")
    (c.tmp / index / "mine").mkdir()
    return "index", ["--bm25", "--input", "corpus.jsonl", "--index", index], ["ix", "NOTES.md", "mine/", "Move"]


@case("index --bm25 rebuilt over our index holding a file in its logs folder")
def _(c):
    index = c.bm25_index()
    c.write(f"{index}/logs/mine.txt", "mine\n")
    return "index", ["--bm25", "--input", "corpus.jsonl", "--index", index], ["logs/mine.txt"]


case("search --output inside an index")(lambda c: (
    "search", ["--index", c.bm25_index(), "--topics", "scifact", "--output", "ix/run.txt"],
    ["ix/run.txt", "inside", "--output"]))
case("index --bm25 --index inside an index")(lambda c: (
    "index", ["--bm25", "--input", "corpus.jsonl", "--index", f"{c.bm25_index()}/sub"], ["ix/sub", "inside"]))


@case("export sentence-transformers rebuilt over our export holding a user's file")
def _(c):
    c.run("export", ["sentence-transformers", "--encoder", "splade-tiny", "--output", "st"])
    c.write("st/NOTES.md", "mine\n")
    return "export", ["sentence-transformers", "--encoder", "splade-tiny", "--output", "st"], ["st", "NOTES.md"]


def _page_argv(recipe: str, page: str) -> list[str]:
    return ["--recipe", recipe, "--condition", "bm25-flat", "--dataset", "scifact", "--dry-run", "--page", page]


case("reproduce --page over a user's file")(lambda c: (
    "reproduce", _page_argv(str(REPO / "eval" / "beir.yaml"), c.write("thesis.tex", "\\documentclass{article}\n")),
    ["thesis.tex", "not written by this toolkit", "--page"]))
case("reproduce --page names the recipe")(lambda c: (
    "reproduce", _page_argv(c.write("r.yaml", (REPO / "eval" / "beir.yaml").read_text()), "r.yaml"),
    ["r.yaml", "--page"]))
case("search beside a user's RUN.manifest.json")(lambda c: (
    "search", ["--index", c.index(), "--topics", c.write("topics.tsv", "1\tcells\n"), "--output", "run.txt"
               if c.write("run.txt.manifest.json", "{}\n") else ""], ["run.txt.manifest.json", "--output"]))


# ---------------------------------------------------------------- identities and values that mean nothing
def _copied_index(c: Ctx, edit: Callable[[dict], None]) -> str:
    """A copy of the tiny impact index whose manifest ``edit`` changes."""
    import shutil

    shutil.copytree(c.index(), c.tmp / "idx")
    manifest = json.loads((c.tmp / "idx" / "manifest.json").read_text())
    edit(manifest)
    (c.tmp / "idx" / "manifest.json").write_text(json.dumps(manifest))
    return "idx"


case("impact index relabelled bm25")(lambda c: (
    "search", ["--index", _copied_index(c, lambda m: m.update(kind="bm25")), "--topics",
               c.write("t.tsv", "1\tcells\n"), "--output", "run.txt"], ["idx", "kind 'bm25'", "encoder spec"]))
case("impact index without its encoder fingerprint")(lambda c: (
    "search", ["--index", _copied_index(c, lambda m: m.pop("encoder_fingerprint")), "--topics",
               c.write("t.tsv", "1\tcells\n"), "--output", "run.txt"],
    ["idx", "records no encoder fingerprint", "--unrecorded-encoder accept"]))
case("search --unrecorded-encoder maybe")(lambda c: (
    "search", ["--index", c.index(), "--topics", c.write("t.tsv", "1\tcells\n"), "--output", "run.txt",
               "--unrecorded-encoder", "maybe"], ["--unrecorded-encoder maybe", "refuse or accept"]))
case("index manifest is a list")(lambda c: (
    "search", ["--index", c.write("ix/manifest.json", "[1, 2]\n").split("/")[0], "--topics", "scifact",
               "--output", "run.txt"], ["ix/manifest.json", "expected an object"]))
case("index manifest nested too deep")(lambda c: (
    "search", ["--index", c.write("ix/manifest.json", "[" * 100_000 + "]" * 100_000).split("/")[0], "--topics",
               "scifact", "--output", "run.txt"], ["ix/manifest.json"]))
for _name, _value in (("2^31", "2147483648"), ("1e29", "1e29"), ("NaN", "NaN"), ("Infinity", "Infinity")):
    case(f"pre-encoded impact {_name}")(lambda c, v=_value: (
        "search", ["--index", c.index(), "--output", "run.txt", "--pre-encoded",
                   c.write("q.jsonl", '{"id": "1", "vector": {"\\u0120cell": ' + v + '}}\n')],
        ["q.jsonl:1", "integer impact"]))
case("eval -m nDCG@0")(lambda c: (
    "eval", ["--qrels", "scifact", "--run", c.write("run.txt", "1 Q0 4983 1 2.0 x\n"), "-m", "nDCG@0"],
    ["-m nDCG@0", "positive integer"]))
case("eval of an empty run")(lambda c: (
    "eval", ["--qrels", "scifact", "--run", c.write("run.txt", "")], ["run.txt", "no lines"]))
case("run score NaN")(lambda c: (
    "eval", ["--qrels", "scifact", "--run", c.write("run.txt", "1 Q0 4983 1 nan x\n")], ["run.txt:1", "finite"]))
case("qrels grade inf")(lambda c: (
    "eval", ["--qrels", c.write("qrels.tsv", "1\t4983\tinf\n"), "--run", c.write("run.txt", "1 Q0 4983 1 2 x\n")],
    ["qrels.tsv:1", "finite"]))
case("index --index MILVUS:// in capitals")(lambda c: (
    "index", ["--input", str(c._tiny()["encoded"]), "--index", "MILVUS://127.0.0.1:1/c"],
    ["MILVUS://127.0.0.1:1/c", "Milvus"]))

def _recipe(c: Ctx, **top) -> str:
    import yaml

    raw = yaml.safe_load((REPO / "eval" / "beir.yaml").read_text())
    raw.update(top)
    return c.write("r.yaml", yaml.safe_dump(raw))


for _label, _top, _said in (("metrics: 5", {"metrics": 5}, "metrics: expected a list"),
                            ("groups as a list", {"groups": ["a"]}, "groups: expected a mapping"),
                            ("a misspelt top key", {"conditons": []}, "did you mean 'conditions'?")):
    case(f"recipe {_label}")(lambda c, t=_top, w=_said: (
        "reproduce", ["--recipe", _recipe(c, **t), "--list"], ["r.yaml", w]))
case("recipe with YAML aliases")(lambda c: (
    "reproduce", ["--recipe", c.write("r.yaml", "a: &x [1, 2]\nb: &y [*x, *x]\nc: [*y, *y]\n"), "--list"],
    ["r.yaml", "alias"]))
case("corpus line above the byte limit")(lambda c: (
    "index", ["--bm25", "--input", c.corpus(bad=json.dumps({"_id": "big", "text": "cell " * (1 << 20)})),
              "--index", "ix"], ["corpus.jsonl:3", "longer than"]))

case("search a missing embedded Milvus file")(lambda c: (
    "search", ["--index", f"milvus://{c.tmp}/none.db/c", "--topics", c.write("t.tsv", "1\tcells\n"), "--output",
               "run.txt"], ["none.db does not exist"]))
case("export into an embedded Milvus file in a missing folder")(lambda c: (
    "index", ["--input", str(c._tiny()["encoded"]), "--index", f"milvus://{c.tmp}/no/x.db/c"],
    ["folder", "/no does not exist"]))
case("BM25 query of more than 1024 distinct terms")(lambda c: (
    "search", ["--index", c.bm25_index(), "--topics", c.write("t.tsv", "1\t" + " ".join(f"w{i}x" for i in range(1100))
                                                            + "\n"), "--output", "run.txt"], ["1024", "shorten"]))
case("encode.query --device gpu")(lambda c: (
    "encode.query", ["--topics", c.write("t.tsv", "1\tcells\n"), "--encoder", "splade-tiny", "--output", "q.tsv",
                     "--device", "gpu"], ["--device gpu"]))
case("encode.query --max-length beyond the model's positions")(lambda c: (
    "encode.query", ["--topics", c.write("t.tsv", "1\tcells\n"), "--encoder", "splade-tiny", "--output", "q.tsv",
                     "--max-length", "100000"], ["--max-length 100000", "512 positions"]))

# ---------------------------------------------------------------- model folders stay inside themselves
def _st_export(c: Ctx, edit: Callable[[Path], None]) -> str:
    c.run("export", ["sentence-transformers", "--encoder", "splade-tiny", "--output", "st"])
    edit(c.tmp / "st")
    return "st"


def _modules_path(path: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        modules = json.loads((folder / "modules.json").read_text())
        modules[1]["path"] = path
        (folder / "modules.json").write_text(json.dumps(modules))
    return edit


def _symlinked_module(folder: Path) -> None:
    (folder / "out").symlink_to(folder.parent.parent)  # the case's own scratch folder's parent: outside
    _modules_path("out")(folder)


for _label, _edit in (("'../x'", _modules_path("../x")), ("an absolute path", _modules_path("/etc")),
                      ("a symlink out", _symlinked_module)):
    case(f"SparseEncoder module path {_label}")(lambda c, e=_edit: (
        "encode.query", ["--topics", c.write("t.tsv", "1\tcells\n"), "--encoder", _st_export(c, e), "--output",
                         "q.tsv"], ["st/modules.json", "module path"]))
case("SparseEncoder modules.json entries are strings")(lambda c: (
    "encode.query", ["--topics", c.write("t.tsv", "1\tcells\n"), "--encoder", _st_export(
        c, lambda f: (f / "modules.json").write_text('["a", "b"]')), "--output", "q.tsv"], ["st/modules.json"]))
case("SparseEncoder modules.json is /dev/zero")(lambda c: (
    "encode.query", ["--topics", c.write("t.tsv", "1\tcells\n"), "--encoder", _st_export(
        c, lambda f: ((f / "modules.json").unlink(), (f / "modules.json").symlink_to("/dev/zero"))), "--output",
                     "q.tsv"], ["st/modules.json", "too large"]))
case("SparseEncoder config prompts not strings")(lambda c: (
    "encode.query", ["--topics", c.write("t.tsv", "1\tcells\n"), "--encoder", _st_export(
        c, lambda f: (f / "config_sentence_transformers.json").write_text('{"prompts": {"query": 5}}')),
        "--output", "q.tsv"], ["prompts"]))
case("encoder spec gguf_file outside the folder")(lambda c: (
    "encode.query", ["--topics", c.write("t.tsv", "1\tcells\n"), "--encoder", c.write(
        "m/encoder_spec.json", json.dumps({"name": "m", "model": "m", "kind": "decoder",
                                           "gguf_file": "/etc/passwd"})).split("/")[0], "--output", "q.tsv"],
    ["gguf_file", "/etc/passwd"]))
case("LoRA adapter saved as .bin")(lambda c: (
    "encode.query", ["--topics", c.write("t.tsv", "1\tcells\n"), "--encoder", c.write(
        "lora/adapter_config.json", '{"base_model_name_or_path": "splade-tiny"}') and c.write(
        "lora/adapter_model.bin", b"\x80\x02}q\x00.").split("/")[0], "--output", "q.tsv"],
    ["lora", "adapter_model.safetensors"]))
case("model config.json is a list")(lambda c: (
    "encode.query", ["--topics", c.write("t.tsv", "1\tcells\n"), "--encoder",
                     c.write("mdl/config.json", "[]").split("/")[0], "--output", "q.tsv"],
    ["mdl/config.json", "expected an object"]))
case("model config.json architectures a string")(lambda c: (
    "encode.query", ["--topics", c.write("t.tsv", "1\tcells\n"), "--encoder",
                     c.write("mdl/config.json", '{"architectures": "BertForMaskedLM"}').split("/")[0], "--output",
                     "q.tsv"], ["mdl/config.json", "architectures"]))
case("model config.json not UTF-8")(lambda c: (
    "encode.query", ["--topics", c.write("t.tsv", "1\tcells\n"), "--encoder",
                     c.write("mdl/config.json", b'{"a": "\xff"}').split("/")[0], "--output", "q.tsv"],
    ["mdl/config.json:1", "UTF-8"]))


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return out


def _lock(path: Path) -> None:
    path.chmod(0o555)
    if os.geteuid() == 0:  # root writes through mode bits; the immutable attribute stops it too
        subprocess.run(["chattr", "+i", str(path)], check=True)


def _unlock(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o755)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_error(name, tmp_path, tmp_path_factory, data_root, tiny):
    work = tmp_path / "work"
    work.mkdir()
    ctx = Ctx(work, data_root, tiny, tmp_path)
    module, argv, expected = CASES[name](ctx)
    before = _snapshot(work)
    for path in ctx.read_only:
        _lock(path)
    try:
        proc = _cli(module, argv, work, _env(**ctx.env))
    finally:
        for path in ctx.read_only:
            _unlock(path)
    shown = f"$ python -m laconic_pyserini.{module} {shlex.join(argv)}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 2, shown
    assert "Traceback" not in proc.stderr, shown
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), shown
    assert sum(line.startswith("error: ") for line in lines) == 1, shown
    for text in expected:
        assert text in lines[-1], f"{text!r} not in the error line\n{shown}"
    assert _snapshot(work) == before, f"files changed or were added\n{shown}"


def test_reproduce_quotes_every_substituted_value(tmp_path, data_root):
    """A report folder with a space stays one argument, and a --var value cannot add options to a command."""
    report = tmp_path / "my reports"
    proc = _cli("reproduce", ["--recipe", str(REPO / "eval" / "beir.yaml"), "--condition", "bm25-flat",
                              "--dataset", "scifact", "--report", str(report), "--data-root", str(data_root),
                              "--var", "threads=1 --hits 1", "--dry-run"], tmp_path, _env())
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line) for line in proc.stdout.splitlines() if line.strip().startswith("python ")]
    assert len(commands) == 3, proc.stdout  # index, search, eval
    work = f"{report}/beir/bm25-flat/scifact"
    index_cmd, search_cmd, _ = commands
    assert index_cmd[index_cmd.index("--index") + 1] == f"{work}/index"
    assert search_cmd[search_cmd.index("--output") + 1] == f"{work}/run.bm25-flat.scifact.txt"
    assert search_cmd[search_cmd.index("--threads") + 1] == "1 --hits 1"
    assert search_cmd.count("--hits") == 1  # the recipe's own --hits 1000, nothing injected
    assert not report.exists()  # a dry run writes nothing


def test_ids_that_are_json_integers_read_as_decimal_strings(tmp_path):
    """BEIR's convention: ``{"_id": 7}`` is the id ``"7"``; the same id as a string is a duplicate of it."""
    from laconic_pyserini.data import DataError, iter_corpus
    from laconic_pyserini.topics import load_topics

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": 7, "text": "a"}\n{"_id": "x-1", "text": "b"}\n', encoding="utf-8")
    assert [d.id for d in iter_corpus(corpus)] == ["7", "x-1"]
    corpus.write_text('{"_id": 7, "text": "a"}\n{"_id": "7", "text": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"corpus.jsonl:2: duplicate document id '7'"):
        list(iter_corpus(corpus))
    topics = tmp_path / "topics.jsonl"
    topics.write_text(json.dumps({"_id": 12, "text": "q"}) + "\n", encoding="utf-8")
    assert load_topics(topics, None) == {"12": "q"}


def test_outputs_of_ours_are_replaced_where_nothing_else_is_inside(tmp_path, data_root):
    """The valid side of the ownership cases: an index, a page and a run's sidecar of ours are replaced."""
    ctx = Ctx(tmp_path, data_root, lambda: {}, tmp_path)
    index = tmp_path / ctx.bm25_index()
    written = json.loads((index / ".laconic-written.json").read_text())["entries"]
    assert "manifest.json" in written and "logs/" in written and "logs/index.log" in written
    (index / ".laconic-written.json").unlink()  # an index built before outputs carried a record
    ctx.run("index", ["--bm25", "--input", "corpus.jsonl", "--index", "ix"])  # the new build's files are ours
    ctx.run("index", ["--bm25", "--input", "corpus.jsonl", "--index", "ix"])
    assert json.loads((index / "manifest.json").read_text())["documents"] == 5
    for _ in range(2):
        ctx.run("reproduce", _page_argv(str(REPO / "eval" / "beir.yaml"), "page.md"))
    page = (tmp_path / "page.md").read_text(encoding="utf-8")
    assert page.startswith("<!-- reproduction page") and "bm25-flat" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "ix", "page.md"]


def test_a_failed_encode_does_not_block_the_corrected_rerun(tmp_path, data_root):
    """An encode that committed nothing (here: a --max-length the model cannot take) leaves a folder the corrected
    command simply starts over in."""
    ctx = Ctx(tmp_path, data_root, lambda: {}, tmp_path)
    argv = ["--corpus", ctx.corpus(), "--embeddings", "enc", "--encoder", "splade-tiny", "--no-progress"]
    failed = _cli("encode", [*argv, "--max-length", "100000"], tmp_path, _env())
    assert failed.returncode == 2 and "--max-length 100000" in failed.stderr.strip().splitlines()[-1], failed.stderr
    ctx.run("encode", argv)
    from laconic_pyserini.encode import read_manifest

    manifest = read_manifest(tmp_path / "enc")
    assert manifest.complete and manifest.spec["max_length"] == 256 and manifest.documents == 5


def test_rebuilding_the_index_the_command_runs_in_is_refused(tmp_path, data_root):
    ctx = Ctx(tmp_path, data_root, lambda: {}, tmp_path)
    index = tmp_path / ctx.bm25_index()
    before = _snapshot(tmp_path)
    proc = _cli("index", ["--bm25", "--input", "../corpus.jsonl", "--index", "."], index, _env())
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith("error: ") and "current folder is inside this output" in lines[-1], proc.stderr
    assert _snapshot(tmp_path) == before
