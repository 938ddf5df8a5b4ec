"""Shared fixtures: real data from ../shared/datasets, real models from $LACONIC_MODELS, real Anserini."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

# Tests never touch the network: transformers and the hub client read local folders only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("LACONIC_DATA", REPO.parent / "shared" / "datasets"))
#: The one place the tests compute the models folder.
MODELS_ROOT = Path(os.environ.get("LACONIC_MODELS", Path.home() / ".cache" / "laconic-models")).expanduser()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "scifact" / "corpus.jsonl").exists():
        pytest.fail(f"real datasets not found under {DATA_ROOT}: the project expects ../shared/datasets "
                    "beside the checkout (or set LACONIC_DATA)")
    return DATA_ROOT


def model_dir(name: str, *, needs: str | None = None) -> Path:
    """A model folder under $LACONIC_MODELS (holding the file ``needs``, when given); the test fails (not skips)
    when it is missing, saying how to fetch it."""
    path = MODELS_ROOT / name
    if not path.is_dir() or (needs is not None and not (path / needs).exists()):
        missing = path / needs if needs else path
        pytest.fail(f"{missing} is missing: run `make models` (../shared/assets/fetch-models.sh {MODELS_ROOT})")
    return path


def assert_same_impacts(got: dict[str, dict[str, int]], want: dict[str, dict[str, int]]) -> None:
    """Two encodings of the same texts by the same model: the same documents and terms, and every impact equal
    but for rare one-unit flips. A flip is an fp32 weight within a few units in the last place of a rounding
    boundary of rint(100 w), pushed across it by another BLAS kernel's rounding: MKL's AVX2 kernels round by
    product shape and memory alignment (another batch, another process), its AVX-512 ones did not here. Measured
    under AVX2: a handful of the ~1.2 M impacts of SciFact; allowed: one in 10,000."""
    assert got.keys() == want.keys()
    flips = total = 0
    for doc_id, vector in want.items():
        other = got[doc_id]
        assert other.keys() == vector.keys() or _only_unit_terms(other, vector), doc_id
        for term in vector.keys() | other.keys():
            delta = abs(other.get(term, 0) - vector.get(term, 0))
            assert delta <= 1, (doc_id, term, other.get(term), vector.get(term))
            flips += delta
        total += len(vector)
    assert flips <= max(1, total // 10_000), (flips, total)


def _only_unit_terms(a: dict[str, int], b: dict[str, int]) -> bool:
    """Terms in one vector only may differ by an impact of 1 (0.005 ≤ w < 0.015 on one side, rounded to 0 on the
    other)."""
    return all(a.get(t, 0) <= 1 and b.get(t, 0) <= 1 for t in a.keys() ^ b.keys())


def require(module: str, install: str):
    """Import a dependency the test needs; a missing one fails with the command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"python module {module!r} is missing: {install}")


def save_tiny_llama(folder: Path, tokenizer: Path):
    """A tiny random Llama with LACONIC's vocabulary (seeded: the same weights every call) saved at ``folder``,
    and its spec with the real Llama-3 tokenizer."""
    import torch
    import transformers

    from laconic_pyserini.spec import load_spec

    torch.manual_seed(1234)
    config = transformers.LlamaConfig(vocab_size=128_256, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=512, tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        model.get_output_embeddings().weight.normal_(0.0, 1.0)
    model.save_pretrained(folder, safe_serialization=True)
    return load_spec(str(folder), tokenizer=str(tokenizer))


@pytest.fixture(scope="session")
def llama3_tokenizer() -> Path:
    return model_dir("llama3-tokenizer", needs="tokenizer.json")


@pytest.fixture(scope="session")
def splade_tiny_dir() -> Path:
    return model_dir("splade-tiny", needs="model.safetensors")


def run_root(tmp_path_factory) -> Path:
    """The run's temporary folder: shared by every pytest-xdist worker of this run (each worker's own basetemp is
    a ``popen-gwN`` folder inside it), new for every run."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def shared_build(tmp_path_factory) -> Callable[[str, Callable[[Path], dict[str, Path]]], dict[str, Path]]:
    """``shared_build(name, build)``: the artefacts ``build(folder)`` makes, built once per run whichever worker
    asks first (a file lock around a build into a fresh folder of the run's temporary directory) and read by
    every worker after; a failed build leaves nothing the next asker would trust. Callers only read what they get.
    """
    root = run_root(tmp_path_factory) / "shared"
    root.mkdir(exist_ok=True)
    seen: dict[str, dict[str, Path]] = {}

    def get(name: str, build: Callable[[Path], dict[str, Path]]) -> dict[str, Path]:
        if name not in seen:
            done = root / f"{name}.json"
            with FileLock(str(root / f"{name}.lock")):
                if not done.exists():
                    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
                    paths = build(folder)
                    done.write_text(json.dumps({key: str(path) for key, path in paths.items()}), encoding="utf-8")
            seen[name] = {key: Path(path) for key, path in json.loads(done.read_text(encoding="utf-8")).items()}
        return seen[name]

    return get


@pytest.fixture(scope="session")
def bm25_index(shared_build, data_root):
    """The BM25 indexes that several test modules search, built once per run."""
    from laconic_pyserini.index.lucene import build_bm25_index

    def get(dataset: str, fields: str = "flat") -> Path:
        def build(folder: Path) -> dict[str, Path]:
            return {"index": build_bm25_index(data_root / dataset, folder / "index", fields=fields, threads=2)}

        return shared_build(f"bm25-{dataset}-{fields}", build)["index"]

    return get


@pytest.fixture(scope="session")
def encoded(shared_build, data_root):
    """Whole-corpus encodings shared by every test module, made once per run (they are the slow part).

    ``encoded("splade-tiny", "scifact")`` -> ``{"encoded": JsonVectorCollection folder, "index": impact index}``;
    ``encoded("minilm", "scifact")`` -> ``{"index": faiss flat index folder}``. Both come from the package's own
    typed functions (``encode_corpus`` + ``build_impact_index``, ``encode_dense_corpus``), exactly what the CLIs run.
    ``weights="float"``: ``encode --weights float`` (its index quantises them).
    """

    def get(encoder: str, dataset: str, weights: str = "impact") -> dict[str, Path]:
        def build(work: Path) -> dict[str, Path]:
            if encoder == "minilm":
                from laconic_pyserini.encode.dense import encode_dense_corpus

                model_dir("all-MiniLM-L6-v2")
                return {"index": encode_dense_corpus(data_root / dataset, "minilm", work / "index")}
            from laconic_pyserini.encode import encode_corpus
            from laconic_pyserini.index.impact import build_impact_index

            model_dir(encoder)
            encode_corpus(data_root / dataset, work / "encoded", encoder, batch_size=32, progress=False,
                          weights=weights)
            return {"encoded": work / "encoded",
                    "index": build_impact_index(work / "encoded", work / "index", threads=2)}

        return shared_build(f"{encoder}-{dataset}-{weights}", build)

    return get


@pytest.fixture(scope="session")
def scifact200(tmp_path_factory, data_root) -> Path:
    """The first 200 SciFact documents as a BEIR folder, with SciFact's queries and test qrels whole."""
    import shutil

    folder = tmp_path_factory.mktemp("data") / "scifact200"
    (folder / "qrels").mkdir(parents=True)
    with open(data_root / "scifact" / "corpus.jsonl", encoding="utf-8") as corpus:
        (folder / "corpus.jsonl").write_text("".join(line for _, line in zip(range(200), corpus)), encoding="utf-8")
    shutil.copy(data_root / "scifact" / "queries.jsonl", folder / "queries.jsonl")
    shutil.copy(data_root / "scifact" / "qrels" / "test.tsv", folder / "qrels" / "test.tsv")
    return folder


@pytest.fixture(scope="session")
def splade200(tmp_path_factory, scifact200) -> dict[str, Path]:
    """``scifact200`` encoded with splade-tiny and indexed (an impact index with its raw documents, the default)."""
    from laconic_pyserini.encode import encode_corpus
    from laconic_pyserini.index.impact import build_impact_index

    model_dir("splade-tiny")
    work = tmp_path_factory.mktemp("splade200")
    encode_corpus(scifact200, work / "encoded", "splade-tiny", batch_size=32, progress=False)
    return {"encoded": work / "encoded", "index": build_impact_index(work / "encoded", work / "index", threads=2)}
