"""An encoder's identity is its weights: a copy of splade-tiny with other weights is never taken for the original.

A folder named ``splade-tiny`` holding noised weights passed as ``--encoder`` searched an index of
the real splade-tiny without a word. Here the real model, an exact copy under another path and a noised copy meet
the real SciFact index of the session (tests/conftest.py ``encoded``), through the CLIs and the typed searchers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, model_dir

pytestmark = pytest.mark.slow

QUERIES = 20  # SciFact test queries searched where hits are compared


def _copy_model(name: str, target: Path, *, noise: float = 0.0) -> Path:
    """A copy of $LACONIC_MODELS/``name`` in ``target``; ``noise`` > 0 perturbs every float weight."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(model_dir(name), target)
    if noise:
        weights_file = target / "model.safetensors"
        weights = load_file(weights_file)
        rng = np.random.default_rng(13)
        noised = {k: (v + rng.normal(0, noise, v.shape).astype(v.dtype)) if v.dtype.kind == "f" else v
                  for k, v in weights.items()}
        save_file(noised, weights_file, metadata={"format": "pt"})
    return target


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity-models")
    return {"same": _copy_model("splade-tiny", root / "same" / "splade-tiny"),
            "noised": _copy_model("splade-tiny", root / "m" / "splade-tiny", noise=0.05)}


@pytest.fixture(scope="module")
def scifact(encoded):
    return encoded("splade-tiny", "scifact")


@pytest.fixture(scope="module")
def topics(data_root):
    from laconic_pyserini.topics import load_topics

    return dict(list(load_topics(data_root / "scifact", "test").items())[:QUERIES])


def _cli(module: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=environment, cwd=REPO, timeout=600)


# ---------------------------------------------------------------------------------------------- fingerprints


def test_manifests_record_the_weights_fingerprint(scifact):
    from laconic_pyserini.fingerprint import FINGERPRINT_KEY

    encoded = json.loads((scifact["encoded"] / "manifest.json").read_text())[FINGERPRINT_KEY]
    index = json.loads((scifact["index"] / "manifest.json").read_text())[FINGERPRINT_KEY]
    assert index == encoded
    weights = model_dir("splade-tiny") / "model.safetensors"
    assert encoded["files"]["model/model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert encoded["basis"] == "files"
    # The names are relative: a copy elsewhere has the same fingerprint, the combined digest is over these lines.
    lines = "".join(f"{k}: {v}\n" for k, v in sorted(encoded["files"].items()))
    assert encoded["sha256"] == hashlib.sha256(lines.encode()).hexdigest()


def test_copy_has_same_fingerprint_and_noised_copy_another(copies, tmp_path):
    from laconic_pyserini.fingerprint import DigestCache, encoder_fingerprint
    from laconic_pyserini.spec import load_spec

    cache = DigestCache(tmp_path / "digests.json")
    real = encoder_fingerprint(load_spec("splade-tiny"), cache=cache)
    same = encoder_fingerprint(load_spec(str(copies["same"])), cache=cache)
    noised = encoder_fingerprint(load_spec(str(copies["noised"])), cache=cache)
    assert same["sha256"] == real["sha256"]
    assert noised["sha256"] != real["sha256"]
    assert {k for k in real["files"] if real["files"][k] != noised["files"][k]} == {"model/model.safetensors"}


def test_digest_cache_hashes_each_file_once(tmp_path):
    from laconic_pyserini.fingerprint import DigestCache, encoder_fingerprint
    from laconic_pyserini.spec import load_spec

    spec = load_spec("splade-tiny")
    path = tmp_path / "cache" / "digests.json"
    first = DigestCache(path)
    fingerprint = encoder_fingerprint(spec, cache=first)
    first.save()
    files = len(fingerprint["files"])
    assert (first.hits, first.misses) == (0, files)
    weights = (model_dir("splade-tiny") / "model.safetensors").resolve()
    entry = json.loads(path.read_text())["files"][str(weights)]
    stat = weights.stat()
    assert entry == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                     "sha256": fingerprint["files"]["model/model.safetensors"]}

    # A later process (a fresh cache object on the same file) reads the digests, not the weights.
    second = DigestCache(path)
    assert encoder_fingerprint(spec, cache=second) == fingerprint
    assert (second.hits, second.misses) == (files, 0)


def test_digest_cache_rehashes_a_changed_file(tmp_path):
    from laconic_pyserini.fingerprint import DigestCache

    file = tmp_path / "w.safetensors"
    file.write_bytes(b"a" * 100)
    cache = DigestCache(tmp_path / "digests.json")
    before = cache.digest(file)
    file.write_bytes(b"b" * 100)  # same size; the new mtime_ns is what tells
    os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 1_000_000))
    after = cache.digest(file)
    assert (cache.hits, cache.misses) == (0, 2)
    assert before == hashlib.sha256(b"a" * 100).hexdigest() and after == hashlib.sha256(b"b" * 100).hexdigest()
    # A damaged cache file is rebuilt, never trusted nor fatal.
    (tmp_path / "bad.json").write_text("{not json")
    assert DigestCache(tmp_path / "bad.json").digest(file) == after


def test_hub_id_without_local_files_is_identified_by_its_cached_revision(tmp_path, monkeypatch, caplog):
    from laconic_pyserini.fingerprint import DigestCache, check_encoder_identity, encoder_fingerprint
    from laconic_pyserini.spec import EncoderSpec, load_spec

    monkeypatch.setenv("LACONIC_MODELS", str(tmp_path / "no-models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = EncoderSpec(name="remote", model="some-org/remote-model", kind="mlm")
    cache = DigestCache(tmp_path / "digests.json")
    assert encoder_fingerprint(spec, cache=cache) is None  # nothing here identifies it
    ref = tmp_path / "hub" / "models--some-org--remote-model" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("0123abcd" * 5)
    hub = encoder_fingerprint(spec, cache=cache)
    assert hub["basis"] == "hub" and hub["files"] == {"model@revision": "0123abcd" * 5}
    # A fingerprint of local files and one of a hub revision cannot be compared: refused unless the user accepts
    # it (then one warning).
    monkeypatch.setenv("LACONIC_MODELS", str(model_dir("splade-tiny").parent))
    from laconic_pyserini.fingerprint import FingerprintError

    with pytest.raises(FingerprintError, match="no fingerprint comparable.*--unrecorded-encoder accept"):
        check_encoder_identity(hub, load_spec("splade-tiny"), where="index X", fix="")
    with caplog.at_level(logging.WARNING):
        check_encoder_identity(hub, load_spec("splade-tiny"), where="index X", fix="", unrecorded="accept")
    assert len([r for r in caplog.records if "not checked" in r.getMessage()]) == 1


# ---------------------------------------------------------------------------------------------- search


def test_row2_noised_copy_is_refused_by_search(scifact, copies, data_root, tmp_path):
    run = tmp_path / "run.trec"
    result = _cli("laconic_pyserini.search", "--index", scifact["index"], "--topics", data_root / "scifact",
                  "--encoder", copies["noised"], "--output", run)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, result.stderr
    assert str(scifact["index"]) in error[0] and "model/model.safetensors differs" in error[0]
    assert str(copies["noised"]) in error[0] and "leave --encoder out" in error[0]
    assert not run.exists()


def test_exact_copy_elsewhere_is_accepted_with_same_hits(scifact, copies, topics):
    from laconic_pyserini.searchers.impact import LaconicSearcher

    own = LaconicSearcher(scifact["index"]).batch_search(topics, 10)
    copied = LaconicSearcher(scifact["index"], str(copies["same"])).batch_search(topics, 10)
    assert copied == own
    assert sum(len(hits) for hits in own.values()) == 10 * len(topics)


def test_noised_copy_is_refused_by_every_sparse_searcher(scifact, copies):
    from laconic_pyserini.fingerprint import FingerprintError
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.searchers.impact import LaconicSearcher
    from laconic_pyserini.searchers.seismic import SeismicSearcher
    from laconic_pyserini.spec import load_spec

    with pytest.raises(FingerprintError, match="model/model.safetensors differs"):
        SeismicSearcher(scifact["index"], str(copies["noised"]))
    loaded = load_sparse_encoder(load_spec(str(copies["noised"])))
    with pytest.raises(FingerprintError, match="model/model.safetensors differs"):
        LaconicSearcher(scifact["index"], loaded)


def test_model_replaced_in_place_is_refused_before_it_loads(scifact, copies, tmp_path, topics, monkeypatch):
    """The index's own encoder (no --encoder) whose files changed since: refused when text queries need it."""
    from laconic_pyserini.fingerprint import FingerprintError
    from laconic_pyserini.searchers.impact import LaconicSearcher

    models = tmp_path / "models"
    models.mkdir()
    os.symlink(copies["noised"], models / "splade-tiny")
    monkeypatch.setenv("LACONIC_MODELS", str(models))
    searcher = LaconicSearcher(scifact["index"])
    assert searcher.queries._encoder is None
    with pytest.raises(FingerprintError, match="restore them"):
        searcher.batch_search(topics, 10)
    assert searcher.queries._encoder is None


def test_old_manifest_without_fingerprint_is_refused_unless_accepted(scifact, copies, topics, tmp_path, caplog):
    from laconic_pyserini.fingerprint import FINGERPRINT_KEY, FingerprintError
    from laconic_pyserini.searchers.impact import LaconicSearcher

    old_index = tmp_path / "old-index"
    shutil.copytree(scifact["index"], old_index)
    manifest = json.loads((old_index / "manifest.json").read_text())
    del manifest[FINGERPRINT_KEY]
    (old_index / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FingerprintError, match="records no encoder fingerprint.*--unrecorded-encoder accept"):
        LaconicSearcher(old_index, str(copies["same"]))
    with pytest.raises(FingerprintError, match="records no encoder fingerprint"):
        LaconicSearcher(old_index).batch_search(topics, 10)  # the index's own encoder, checked before it loads
    with caplog.at_level(logging.WARNING):
        hits = LaconicSearcher(old_index, str(copies["same"]), unrecorded_encoder="accept").batch_search(topics, 10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "records no encoder fingerprint" in warnings[0] and "\n" not in warnings[0]
    assert hits == LaconicSearcher(scifact["index"]).batch_search(topics, 10)


def test_pre_encoded_queries_from_other_weights_are_refused(scifact, copies, data_root, tmp_path):
    from laconic_pyserini.fingerprint import FINGERPRINT_KEY

    queries = tmp_path / "noised.tsv"
    encoded = _cli("laconic_pyserini.encode.query", "--topics", data_root / "scifact", "--encoder",
                   copies["noised"], "--output", queries)
    assert encoded.returncode == 0, encoded.stderr
    sidecar = json.loads((tmp_path / "noised.tsv.manifest.json").read_text())
    assert sidecar[FINGERPRINT_KEY]["files"]["model/model.safetensors"] == \
        hashlib.sha256((copies["noised"] / "model.safetensors").read_bytes()).hexdigest()
    run = tmp_path / "run.trec"
    result = _cli("laconic_pyserini.search", "--index", scifact["index"], "--pre-encoded", queries, "--output", run)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"the encoder of {queries}" in result.stderr and "model/model.safetensors differs" in result.stderr
    assert not run.exists()


def test_faiss_index_refuses_other_dense_weights(encoded, tmp_path):
    from laconic_pyserini.fingerprint import FINGERPRINT_KEY, FingerprintError
    from laconic_pyserini.searchers.faiss import FaissSearcher

    index = encoded("minilm", "scifact")["index"]
    recorded = json.loads((index / "manifest.json").read_text())[FINGERPRINT_KEY]
    assert "model/model.safetensors" in recorded["files"]
    noised = _copy_model("all-MiniLM-L6-v2", tmp_path / "minilm", noise=0.05)
    with pytest.raises(FingerprintError, match="model/model.safetensors differs"):
        FaissSearcher(index, encoder=str(noised))
    same = _copy_model("all-MiniLM-L6-v2", tmp_path / "copy" / "minilm")  # a folder's spec is named after it
    assert FaissSearcher(index, encoder=str(same)).batch_search({"q": "aspirin and heart attacks"}, 5) == \
        FaissSearcher(index).batch_search({"q": "aspirin and heart attacks"}, 5)


# ---------------------------------------------------------------------------------------------- encode


def test_encode_refuses_to_continue_with_other_weights(data_root, copies, tmp_path):
    """The same spec (``splade-tiny``) whose model folder now holds other weights cannot add to an encoding."""
    corpus = tmp_path / "corpus.jsonl"
    with open(data_root / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        corpus.write_text("".join(next(f) for _ in range(40)), encoding="utf-8")
    out = tmp_path / "encoded"
    first = _cli("laconic_pyserini.encode", "--corpus", corpus, "--encoder", "splade-tiny", "--embeddings", out)
    assert first.returncode == 0, first.stderr
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    models = tmp_path / "models"
    models.mkdir()
    os.symlink(copies["noised"], models / "splade-tiny")
    again = _cli("laconic_pyserini.encode", "--corpus", corpus, "--encoder", "splade-tiny", "--embeddings", out,
                 env={"LACONIC_MODELS": str(models)})
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr
    assert "other weights or tokenizer" in again.stderr and "model/model.safetensors differs" in again.stderr
    assert str(out / "manifest.json") in again.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
