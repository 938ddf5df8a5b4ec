"""Kernels chosen by what the CPU does fast (laconic_pyserini.modeling.cpu): dispatch, identical output, thread
counts that do not leak, and the decision recorded in manifests."""

from __future__ import annotations

import json
import logging
from itertools import islice
from pathlib import Path

import pytest
import torch
import transformers

from conftest import model_dir
from laconic_pyserini.data import iter_corpus
from laconic_pyserini.modeling.cpu import (ENV_BF16_MATMUL, ENV_INT8_MATMUL, int8_exact, kernel_decision,
                                           probe_gflops, resolve_dtype, threads)
from laconic_pyserini.modeling.loading import load_model
from laconic_pyserini.modeling.sparse_encoder import SparseEncoder
from laconic_pyserini.modeling.screened_head import split_head
from laconic_pyserini.modeling.sparse_head import keep_top_k, sparse_pool
from laconic_pyserini.quantize import quantize_tensor
from laconic_pyserini.spec import load_spec

# What the probe may answer: neither low-precision product pays (SLOW), bf16 does (FAST: AVX512_BF16), int8 does
# (INT8: AVX2 and later).
SLOW, FAST, INT8 = kernel_decision("slow"), kernel_decision("fast"), kernel_decision("slow", "fast")


def _reference_weights(encoder: SparseEncoder, texts: list[str]) -> torch.Tensor:
    """The all-fp32 B×L×V chunked head (the path training differentiates), top-k applied: the floats to match."""
    input_ids, mask = encoder.tokenize(texts)
    with torch.inference_mode():
        kwargs = {"use_cache": False} if encoder.spec.kind == "decoder" else {}
        hidden = encoder._body(input_ids=input_ids, attention_mask=mask, **kwargs).last_hidden_state
        weights = sparse_pool(hidden, mask, encoder._head, encoder.vocab_size, activation=encoder.spec.activation,
                              offset=encoder.spec.logit_offset)
    return keep_top_k(weights, encoder.spec.top_k)


def assert_same_vectors(encoder: SparseEncoder, texts: list[str], reference: torch.Tensor) -> None:
    """``encoder``'s vectors of ``texts`` are the reference's: the contract's output (the quantised impacts of
    every row) is identical, and the float weights differ by no more than fp32 rounding. Another product shape may
    take another BLAS kernel (MKL's AVX2 kernels round differently for other shapes), so the bound is the standard
    one for two fp32 dot products of length K: 2·K·2⁻²⁴·max‖h‖·max‖w‖ (log1p∘relu is 1-Lipschitz)."""
    got = encoder.encode_weights(texts)
    assert torch.equal(quantize_tensor(got), quantize_tensor(reference))
    head = split_head(encoder.model, encoder.spec.kind)
    input_ids, mask = encoder.tokenize(texts)
    with torch.inference_mode():
        hidden = encoder.hidden_states(input_ids, mask)[mask.bool()]
        hidden = head.transform(hidden) if head.transform is not None else hidden
    norms = float(hidden.norm(dim=1).max()) * float(head.weight.norm(dim=1).max()) if hidden.numel() else 0.0
    assert float((got - reference).nan_to_num(0.0).abs().max()) <= 2 * head.weight.shape[1] * 2.0 ** -24 * norms


def _scifact_batches(data_root: Path, spec, encoder: SparseEncoder, count: int = 96) -> list[list[str]]:
    """Real SciFact documents as the encode loop batches them: prefixed, longest first, 32 at a time."""
    texts = [spec.document_text("", d.contents) for d in islice(iter_corpus(data_root / "scifact"), count)]
    lengths = encoder.tokenize_lengths(texts)
    texts = [texts[i] for i in sorted(range(len(texts)), key=lambda i: (-lengths[i], i))]
    # The odd batches: a lone document, and three short ones (products below four rows take other kernels).
    return [texts[i:i + 32] for i in range(0, len(texts), 32)] + [texts[-1:], [t[:40] for t in texts[-3:]]]


def _write_corpus(folder: Path, docs) -> None:
    lines = (json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs)
    (folder / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")


def test_dispatch_follows_the_probe_and_output_is_identical_either_way(data_root):
    model_dir("splade-tiny")
    spec = load_spec("splade-tiny")
    loaded = load_model(spec, dtype="fp32")
    slow = SparseEncoder(spec, loaded, decision=SLOW)     # the probe said: bf16 and int8 no faster than fp32
    fast = SparseEncoder(spec, loaded, decision=FAST)     # bf16 fast, int8 not
    int8 = SparseEncoder(spec, loaded, decision=INT8)     # int8 fast, bf16 slow (an AVX2-only CPU)
    assert (slow.head_kernel, fast.head_kernel, int8.head_kernel) == ("fp32-exact", "screened-bf16",
                                                                      "screened-int8")
    assert slow._screened is None and fast._screened.precision == "bf16" and int8._screened.precision == "int8"
    both = kernel_decision("fast", "fast")
    assert SparseEncoder(spec, loaded, decision=both).head_kernel == "screened-int8"  # no rates: int8 first
    forced = SparseEncoder(spec, loaded, decision=SLOW, screen=True)  # an explicit choice wins
    assert forced.head_kernel == "screened-bf16"
    assert SparseEncoder(spec, loaded, decision=SLOW, screen="int8").head_kernel == "screened-int8"
    assert SparseEncoder(spec, loaded, decision=INT8, screen=False).head_kernel == "fp32-exact"
    for batch in _scifact_batches(data_root, spec, slow):
        reference = _reference_weights(slow, batch)
        for encoder in (slow, fast, int8):
            assert_same_vectors(encoder, batch, reference)
    assert int((reference > 0).sum()) > 0  # the comparison is over real, non-empty vectors


def test_int8_screen_needs_an_exact_int8_product_and_is_chosen_by_rate():
    """The int8 screen's bound assumes exact int32 sums: the exactness check runs on this CPU's real kernel, and
    the choice between two fast screens follows the measured rates."""
    assert int8_exact()  # torch._int_mm with 7-bit weights is exact on x86 (AVX2's vpmaddubsw cannot saturate)
    assert probe_gflops(torch.int8, shape=(64, 128, 1024), repeats=1) > 0
    base = kernel_decision("fast", "fast")
    import dataclasses

    slower_int8 = dataclasses.replace(base, fp32_gflops=100.0, bf16_gflops=300.0, int8_gflops=200.0)
    faster_int8 = dataclasses.replace(base, fp32_gflops=100.0, bf16_gflops=300.0, int8_gflops=500.0)
    assert (slower_int8.screen, faster_int8.screen) == ("bf16", "int8")
    inexact = dataclasses.replace(base, int8_matmul="inexact")
    assert inexact.screen == "bf16" and json.loads(json.dumps(inexact.to_dict()))["screen"] == "bf16"
    model_dir("splade-tiny")
    spec = load_spec("splade-tiny")
    with pytest.raises(ValueError, match="_int_mm"):
        SparseEncoder(spec, load_model(spec, dtype="fp32"), decision=inexact, screen="int8")


def test_exact_head_equals_reference_on_a_random_llama(tmp_path):
    tokenizer_dir = model_dir("llama3-tokenizer")
    torch.manual_seed(7)
    config = transformers.AutoConfig.for_model("llama", vocab_size=128_256, hidden_size=64, intermediate_size=128,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               max_position_embeddings=512, tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        model.get_output_embeddings().weight.normal_(0.0, 1.0)
    model.save_pretrained(tmp_path / "tiny-llama", safe_serialization=True)
    spec = load_spec(str(tmp_path / "tiny-llama"), tokenizer=str(tokenizer_dir))
    loaded = load_model(spec, dtype="fp32")
    texts = [spec.document_text("", t) for t in (
        "Heart attack symptoms include chest pain and shortness of breath.", "aspirin", "",
        "0-dimensional biomaterials show inductive properties " * 12)]
    for decision, kernel in ((SLOW, "fp32-exact"), (FAST, "screened-bf16"), (INT8, "screened-int8")):
        encoder = SparseEncoder(spec, loaded, decision=decision)
        assert encoder.head_kernel == kernel
        encoder.block_bytes = 40 * 1000 * 4  # several vocabulary blocks per sequence, and a short tail
        if encoder._screened is not None:
            encoder._screened.block_bytes = encoder.block_bytes
        for batch in (texts, texts[1:2]):
            assert_same_vectors(encoder, batch, _reference_weights(encoder, batch))


def test_answers_from_the_environment_and_dtype_rule(monkeypatch, caplog):
    monkeypatch.setenv(ENV_BF16_MATMUL, "slow")
    monkeypatch.setenv(ENV_INT8_MATMUL, "slow")
    decision = kernel_decision()
    assert (decision.bf16_matmul, decision.source, decision.screen) == ("slow", f"env {ENV_BF16_MATMUL}", "none")
    assert (decision.int8_matmul, decision.int8_source) == ("slow", f"env {ENV_INT8_MATMUL}")
    monkeypatch.setenv(ENV_INT8_MATMUL, "fast")
    assert (kernel_decision().screen, kernel_decision().int8_source) == ("int8", f"env {ENV_INT8_MATMUL}")
    assert decision.capability == torch.backends.cpu.get_cpu_capability()
    assert json.loads(json.dumps(decision.to_dict()))["decoder_dtype"] == "fp32"
    monkeypatch.setenv(ENV_BF16_MATMUL, "sometimes")
    with pytest.raises(ValueError, match=ENV_BF16_MATMUL):
        kernel_decision()
    assert resolve_dtype("auto", decoder=True, decision=SLOW) == "fp32"
    assert resolve_dtype("auto", decoder=True, decision=FAST) == "bf16"
    assert resolve_dtype("auto", decoder=False, decision=FAST) == "fp32"  # SPLADE / MiniLM keep fp32
    with caplog.at_level(logging.WARNING, logger="laconic_pyserini.modeling.cpu"):
        assert resolve_dtype("bf16", decoder=True, decision=SLOW) == "bf16"  # the user's choice wins
        resolve_dtype("bf16", decoder=True, decision=SLOW)
    assert sum("bf16 matmuls are slow" in r.getMessage() for r in caplog.records) <= 1


def test_faiss_search_leaves_torch_threads_unchanged(tmp_path, data_root):
    """faiss and torch share one OpenMP runtime: a search must not leave its thread count behind."""
    import faiss

    from laconic_pyserini.encode.dense import encode_dense_corpus
    from laconic_pyserini.searchers.faiss import FaissSearcher

    model_dir("all-MiniLM-L6-v2")
    docs = list(islice(iter_corpus(data_root / "scifact"), 24))
    corpus = tmp_path / "mini"  # a BEIR folder of real SciFact documents
    corpus.mkdir()
    _write_corpus(corpus, docs)
    index = encode_dense_corpus(corpus, "minilm", tmp_path / "index")
    with threads(2):
        before = (torch.get_num_threads(), faiss.omp_get_max_threads())
        searcher = FaissSearcher(index)
        run = searcher.batch_search({"q": docs[5].text}, k=3, threads=1)
        assert run["q"][0][0] == docs[5].id  # a real search: a document's own text finds it first
        searcher.search(docs[7].text, k=3)
        assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before == (2, 2)
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kernels"]["dtype"] == "fp32" and manifest["kernels"]["cpu"]["capability"]


def test_decision_recorded_in_the_encode_manifest_and_old_manifest_resumes(tmp_path, data_root, monkeypatch):
    from laconic_pyserini.encode import encode_corpus

    model_dir("splade-tiny")
    monkeypatch.setenv(ENV_BF16_MATMUL, "slow")
    monkeypatch.setenv(ENV_INT8_MATMUL, "slow")
    docs = list(islice(iter_corpus(data_root / "scifact"), 30))
    corpus = tmp_path / "mini"  # a BEIR folder of real SciFact documents
    corpus.mkdir()
    _write_corpus(corpus, docs)
    out = tmp_path / "enc"
    manifest = encode_corpus(corpus, out, "splade-tiny", part_size=12, progress=False)
    record = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert record["settings"]["dtype"] == "fp32"  # "auto", resolved
    (run,) = record["kernels"]
    assert (run["first_part"], run["dtype"], run["head"]) == (0, "fp32", "fp32-exact")
    assert run["cpu"]["bf16_matmul"] == "slow" and run["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    parts = {p.path: (out / p.path).read_bytes() for p in manifest.parts}

    # A half-finished encode by a version that recorded no kernels: the rerun (on a "fast" CPU) resumes it.
    record.pop("kernels")
    record["parts"], record["complete"] = record["parts"][:1], False
    (out / "manifest.json").write_text(json.dumps(record), encoding="utf-8")
    monkeypatch.setenv(ENV_BF16_MATMUL, "fast")
    monkeypatch.setenv(ENV_INT8_MATMUL, "fast")
    resumed = encode_corpus(corpus, out, "splade-tiny", part_size=12, progress=False)
    assert resumed.complete and {p.path: (out / p.path).read_bytes() for p in resumed.parts} == parts
    (run,) = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["kernels"]
    assert (run["first_part"], run["head"], run["cpu"]["bf16_matmul"]) == (1, "screened-int8", "fast")
