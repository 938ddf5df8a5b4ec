"""Model math: bidirectional switch, chunked sparse head, LACONIC parity with a naive reference, SPLADE, loading."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402

from conftest import MODELS_ROOT, model_dir, require  # noqa: E402

from laconic_pyserini.modeling.bidirectional import (  # noqa: E402
    SUPPORTED_MODEL_TYPES, UnsupportedArchitectureError, is_bidirectional, make_bidirectional)
from laconic_pyserini.modeling.sparse_encoder import load_sparse_encoder  # noqa: E402
from laconic_pyserini.modeling.tokenization import special_token_ids  # noqa: E402
from laconic_pyserini.modeling.sparse_head import keep_top_k, max_pool_logits, sparse_pool  # noqa: E402
from laconic_pyserini.quantize import quantize  # noqa: E402
from laconic_pyserini.spec import SpecError, load_spec  # noqa: E402

LLAMA3_TOKENIZER = MODELS_ROOT / "llama3-tokenizer"
SPLADE_TINY = MODELS_ROOT / "splade-tiny"

# A missing model fails the test (conftest's fixtures say how to fetch it); it never skips.
needs_llama3_tokenizer = pytest.mark.usefixtures("llama3_tokenizer")
needs_splade_tiny = pytest.mark.usefixtures("splade_tiny_dir")

TEXTS = [
    "Heart attack symptoms include chest pain and shortness of breath.",
    "0-dimensional biomaterials show inductive properties.",
    "A short one",
    "<|begin_of_text|>a literal BOS string must stay text, not become the BOS id",
]


def tiny_config(model_type: str, vocab_size: int = 128_256):
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  tie_word_embeddings=True)
    if model_type == "qwen3":
        common["head_dim"] = 16
    return transformers.AutoConfig.for_model(model_type, **common)


def tiny_model(model_type: str, vocab_size: int = 1000, attn: str = "sdpa"):
    torch.manual_seed(0)
    config = tiny_config(model_type, vocab_size)
    config._attn_implementation = attn
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A random Llama with the real Llama-3 vocabulary (128,256), saved as safetensors, under a neutral name."""
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    torch.manual_seed(1234)
    model = transformers.LlamaForCausalLM(tiny_config("llama"))
    # Random init gives logits near zero; a larger LM head spreads weights so the top-512 cut is well separated.
    with torch.no_grad():
        model.get_output_embeddings().weight.normal_(0.0, 1.0)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


# -------------------------------------------------------------------------------------------- bidirectional


def _hidden(model, input_ids, attention_mask=None):
    with torch.no_grad():
        return model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                   use_cache=False).last_hidden_state


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_later_token_changes_earlier_position(model_type, attn):
    model = tiny_model(model_type, attn=attn)
    a = torch.tensor([[5, 6, 7, 8, 9]])
    b = torch.tensor([[5, 6, 7, 8, 10]])
    padded_mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    pad = torch.tensor([[3]])
    # Causal before the switch: position 0 cannot see position 4.
    assert torch.allclose(_hidden(model, a)[0, 0], _hidden(model, b)[0, 0])
    make_bidirectional(model)
    assert is_bidirectional(model)
    # No mask (kernel's own is_causal), an all-ones mask (mask skipped) and a padded mask (mask built).
    for mask in (None, torch.ones_like(a)):
        assert not torch.allclose(_hidden(model, a, mask)[0, 0], _hidden(model, b, mask)[0, 0], atol=1e-6)
    ha = _hidden(model, torch.cat([a, pad], 1), padded_mask)
    hb = _hidden(model, torch.cat([b, pad], 1), padded_mask)
    assert not torch.allclose(ha[0, 0], hb[0, 0], atol=1e-6)
    # Padding stays invisible: the padded run equals the unpadded one on real tokens.
    assert torch.allclose(ha[0, :5], _hidden(model, a)[0], atol=1e-5)


def test_bidirectional_is_idempotent():
    model = make_bidirectional(tiny_model("llama"))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    once = _hidden(model, ids)
    assert make_bidirectional(make_bidirectional(model)) is model
    assert torch.equal(once, _hidden(model, ids))


def test_unsupported_architecture_is_refused():
    config = transformers.GPTNeoXConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=64)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedArchitectureError, match="gpt_neox.*llama"):
        make_bidirectional(model)


def test_unsupported_architecture_is_refused_before_loading(tmp_path):
    folder = tmp_path / "laconic-like-neox"
    config = transformers.GPTNeoXConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=64)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    spec = load_spec(str(folder), tokenizer=str(LLAMA3_TOKENIZER))
    assert spec.kind == "decoder"
    with pytest.raises(UnsupportedArchitectureError, match="supported decoder families"):
        load_sparse_encoder(spec)


# -------------------------------------------------------------------------------------------- sparse head


def test_chunked_pool_equals_full_pool_and_its_gradients():
    torch.manual_seed(0)
    batch, length, hidden_size, vocab = 3, 11, 8, 50
    hidden = torch.randn(batch, length, hidden_size, requires_grad=True)
    head = torch.nn.Linear(hidden_size, vocab)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, :] = 0  # an empty text: all weights must be 0, not NaN

    def naive():
        logits = head(hidden)
        activated = torch.log1p(torch.relu(logits)) * mask[:, :, None]
        return activated.max(dim=1).values

    expected = naive()
    params = [hidden, head.weight, head.bias]
    grad_expected = torch.autograd.grad(expected.sum(), params)
    generic = lambda h: head(h)  # noqa: E731  (not an nn.Linear: the plain autograd path)
    for chunk in (1, 3, length, 100):
        for this_head in (head, generic):
            got = sparse_pool(hidden, mask, this_head, vocab, chunk_size=chunk)
            assert torch.allclose(got, expected, atol=1e-6)
            assert torch.all(got[2] == 0)
            grads = torch.autograd.grad(got.sum(), params)
            for g, e in zip(grads, grad_expected):
                assert torch.allclose(g, e, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(sparse_pool(hidden, mask, head, vocab, chunk_size=4), expected, atol=1e-6)


def test_training_graph_does_not_keep_the_logits():
    """What autograd saves for backward stays far below B×L×V, so training memory does not grow with L×V."""
    torch.manual_seed(0)
    batch, length, hidden_size, vocab = 4, 64, 16, 5000
    hidden = torch.randn(batch, length, hidden_size, requires_grad=True)
    head = torch.nn.Linear(hidden_size, vocab, bias=False)
    mask = torch.ones(batch, length)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        weights = sparse_pool(hidden, mask, head, vocab, chunk_size=4)
    full_logits = batch * length * vocab * 4
    # Per chunk: its hidden slice and B×V argmax indices; plus the head weight and the pooled maxima.
    assert sum(saved) < full_logits / 4
    weights.sum().backward()
    assert hidden.grad is not None and head.weight.grad.abs().sum() > 0


def test_chunk_size_follows_the_memory_budget():
    seen = []

    def head(h):
        seen.append(h.shape[1])
        return h @ torch.ones(h.shape[-1], 1000)

    hidden = torch.randn(4, 20, 8)
    max_pool_logits(hidden, torch.ones(4, 20), head, 1000, budget_bytes=4 * 1000 * 4 * 6)
    assert seen == [6, 6, 6, 2]


def test_keep_top_k():
    weights = torch.tensor([[0.125, 0.5, 0.0, 0.25], [1.0, 0.125, 0.25, 0.5]])
    assert keep_top_k(weights, 2).tolist() == [[0.0, 0.5, 0.0, 0.25], [1.0, 0.0, 0.0, 0.5]]
    assert keep_top_k(weights, None) is weights


# -------------------------------------------------------------------------------------------- LACONIC parity


def naive_laconic(folder: Path, tokenizer, texts: list[str], prefix: str,
                  offset: float = 0.0) -> list[dict[str, float]]:
    """One text at a time, no padding, eager attention with a hand-built all-zero (fully visible) 4D mask,
    the whole L×V logits, max over positions, minus ``offset``, log1p(relu), top 512."""
    model = transformers.LlamaForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    specials = {t for t, tok in tokenizer.added_tokens_decoder.items() if tok.special}
    vectors = []
    for text in texts:
        ids = tokenizer(prefix + text, add_special_tokens=False, split_special_tokens=True)["input_ids"][:256]
        assert not specials & set(ids)
        length = len(ids)
        visible = torch.zeros(1, 1, length, length)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), attention_mask=visible).logits[0]
        weights = torch.log1p(torch.relu(logits.max(dim=0).values - offset))
        values, indices = weights.topk(512)
        vectors.append({tokenizer.convert_ids_to_tokens(i): v
                        for i, v in zip(indices.tolist(), values.tolist()) if v > 0})
    return vectors


@needs_llama3_tokenizer
@pytest.mark.parametrize("screen", [True, "int8", False], ids=["screened-head", "int8-screened-head", "fp32-head"])
def test_laconic_vectors_equal_naive_reference(tiny_llama_dir, screen):
    spec = load_spec(str(tiny_llama_dir), tokenizer=str(LLAMA3_TOKENIZER))
    assert (spec.kind, spec.top_k, spec.add_special_tokens, spec.passage_prefix) == ("decoder", 512, False,
                                                                                     "passage: ")
    encoder = load_sparse_encoder(spec, dtype="fp32", screen=screen)
    assert encoder.vocab_size == 128_256
    # screen=True forces the bf16 screen on any CPU, "int8" the int8 one
    assert encoder.head_kernel == {True: "screened-bf16", "int8": "screened-int8", False: "fp32-exact"}[screen]
    # Small blocks force many vocabulary blocks per sequence, the case the naive reference does not have.
    encoder.block_bytes = 64 * 1024
    if screen:
        encoder._screened.block_bytes = 64 * 1024
    tokenizer = transformers.AutoTokenizer.from_pretrained(LLAMA3_TOKENIZER)
    docs = encoder.encode_documents(TEXTS)
    queries = encoder.encode_queries(TEXTS[:2])
    for got, expected in zip(docs + queries, naive_laconic(tiny_llama_dir, tokenizer, TEXTS, "passage: ")
                             + naive_laconic(tiny_llama_dir, tokenizer, TEXTS[:2], "query: ")):
        assert len(got) == 512
        assert set(got) == set(expected)
        for term, weight in expected.items():
            assert got[term] == pytest.approx(weight, abs=1e-4)
        assert quantize(got) == quantize(expected) or _differ_only_at_half(got, expected)
    assert any(term.startswith("Ġ") for term in docs[0])


@needs_llama3_tokenizer
@pytest.mark.parametrize("screen", [True, "int8", False], ids=["screened-head", "int8-screened-head", "fp32-head"])
def test_logit_offset_is_subtracted_before_the_activation(tiny_llama_dir, screen):
    """A spec's ``logit_offset`` τ gives ``log1p(relu(max logit − τ))`` (the naive reference), on both heads; τ is
    taken from the model's own logits so that 100 terms of the first text survive, not 512."""
    import dataclasses

    spec = load_spec(str(tiny_llama_dir), tokenizer=str(LLAMA3_TOKENIZER))
    plain = load_sparse_encoder(spec, dtype="fp32", screen=screen).encode_documents(TEXTS[:1])[0]
    logits = sorted(math.expm1(w) for w in plain.values())
    offset = (logits[-100] + logits[-101]) / 2             # between the 100th and 101st pooled logits of text 1
    encoder = load_sparse_encoder(dataclasses.replace(spec, logit_offset=offset), dtype="fp32", screen=screen)
    tokenizer = transformers.AutoTokenizer.from_pretrained(LLAMA3_TOKENIZER)
    docs = encoder.encode_documents(TEXTS)
    expected = naive_laconic(tiny_llama_dir, tokenizer, TEXTS, "passage: ", offset=offset)
    assert len(docs[0]) == 100
    for got, want in zip(docs, expected):
        assert set(got) == set(want)
        for term, weight in want.items():
            assert got[term] == pytest.approx(weight, abs=1e-4)
    for term, weight in docs[0].items():  # the same pooled logits as with no offset, moved down by τ
        assert weight == pytest.approx(math.log1p(math.expm1(plain[term]) - offset), abs=1e-4)


def _differ_only_at_half(a, b):
    return all(abs(a[t] * 100 - b[t] * 100) < 1e-3 or round(a[t] * 100) == round(b[t] * 100) for t in a)


@needs_llama3_tokenizer
def test_no_special_token_reaches_the_model(tiny_llama_dir):
    encoder = load_sparse_encoder(load_spec(str(tiny_llama_dir), tokenizer=str(LLAMA3_TOKENIZER)), dtype="fp32")
    fed = []
    handle = encoder.model.get_input_embeddings().register_forward_pre_hook(lambda m, args: fed.append(args[0]))
    try:
        encoder.encode_documents(TEXTS)
        encoder.encode_queries(["<|begin_of_text|><|eot_id|> heart attack", ""])
    finally:
        handle.remove()
    specials = special_token_ids(encoder.tokenizer)
    assert {128000, 128001, 128009} <= specials  # BOS, EOS, eot are in the set checked
    seen = set(torch.cat([ids.flatten() for ids in fed]).tolist())
    assert not seen & specials
    # The first token of a query is "query", not BOS.
    first = fed[-1][0, 0].item()
    assert encoder.tokenizer.convert_ids_to_tokens(first) == "query"


@needs_llama3_tokenizer
def test_batch_composition_does_not_change_a_vector(tiny_llama_dir):
    encoder = load_sparse_encoder(load_spec(str(tiny_llama_dir), tokenizer=str(LLAMA3_TOKENIZER)), dtype="fp32")
    alone = encoder.encode_documents([TEXTS[2]])[0]
    batched = encoder.encode_documents(TEXTS)[2]
    assert set(alone) == set(batched)
    assert all(alone[t] == pytest.approx(batched[t], abs=1e-4) for t in alone)
    assert encoder.tokenize_lengths(["", "a b c", "x " * 1000]) == [0, 3, 256]


@needs_llama3_tokenizer
def test_lora_adapter_over_base_equals_merged(tiny_llama_dir, tmp_path):
    peft = require("peft", "pip install 'peft>=0.12' (a dependency in setup.cfg)")
    base = transformers.LlamaForCausalLM.from_pretrained(tiny_llama_dir)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                     init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    lora.save_pretrained(adapter_dir)
    merged_dir = tmp_path / "merged"
    lora.merge_and_unload().save_pretrained(merged_dir, safe_serialization=True)
    adapter_spec = load_spec(str(adapter_dir), tokenizer=str(LLAMA3_TOKENIZER))
    assert (adapter_spec.kind, adapter_spec.base_model) == ("decoder", str(tiny_llama_dir))
    via_adapter = load_sparse_encoder(adapter_spec, dtype="fp32").encode_queries(TEXTS[:1])[0]
    via_merged = load_sparse_encoder(load_spec(str(merged_dir), tokenizer=str(LLAMA3_TOKENIZER)), dtype="fp32") \
        .encode_queries(TEXTS[:1])[0]
    plain = load_sparse_encoder(load_spec(str(tiny_llama_dir), tokenizer=str(LLAMA3_TOKENIZER)), dtype="fp32") \
        .encode_queries(TEXTS[:1])[0]
    assert set(via_adapter) == set(via_merged)
    assert all(via_adapter[t] == pytest.approx(via_merged[t], abs=1e-4) for t in via_adapter)
    assert via_adapter != plain  # the adapter was applied


@needs_llama3_tokenizer
def test_bf16_keeps_the_top_terms(tiny_llama_dir):
    spec = load_spec(str(tiny_llama_dir), tokenizer=str(LLAMA3_TOKENIZER))
    fp32 = load_sparse_encoder(spec, dtype="fp32").encode_queries(TEXTS[:1])[0]
    bf16 = load_sparse_encoder(spec, dtype="bf16").encode_queries(TEXTS[:1])[0]
    top = lambda v: set(sorted(v, key=v.get, reverse=True)[:20])  # noqa: E731
    assert len(top(fp32) & top(bf16)) >= 15


def test_kind_must_agree_with_the_checkpoint(tmp_path):
    folder = tmp_path / "model"
    transformers.AutoModelForCausalLM.from_config(tiny_config("llama", 100)).save_pretrained(folder)
    spec = load_spec(str(folder))
    from dataclasses import replace
    with pytest.raises(SpecError, match=r"mlm spec but .* holds \[.LlamaForCausalLM.\]"):
        load_sparse_encoder(replace(spec, kind="mlm", add_special_tokens=True))


# -------------------------------------------------------------------------------------------- SPLADE


@needs_splade_tiny
def test_splade_tiny_heart_attack_query_and_naive_reference():
    encoder = load_sparse_encoder(load_spec("rasyosef/splade-tiny"))
    query = "what are the symptoms of a heart attack"
    vector = encoder.encode_queries([query])[0]
    top = sorted(vector, key=vector.get, reverse=True)[:5]
    assert {"heart", "attack"} <= set(top)
    assert all(not t.startswith("Ġ") for t in vector)
    # Independent reference: whole-logits BertForMaskedLM with [CLS]/[SEP] as trained.
    model = transformers.AutoModelForMaskedLM.from_pretrained(SPLADE_TINY).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(SPLADE_TINY)
    batch = tokenizer([query, "short"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    weights = (torch.log1p(torch.relu(logits)) * batch["attention_mask"][:, :, None]).max(dim=1).values[0]
    ids = torch.nonzero(weights > 0).squeeze(1).tolist()
    expected = {tokenizer.convert_ids_to_tokens(i): weights[i].item() for i in ids}
    assert set(vector) == set(expected)
    assert all(vector[t] == pytest.approx(expected[t], abs=1e-5) for t in vector)
    assert batch["input_ids"][0, 0].item() == tokenizer.cls_token_id  # special tokens as trained


@needs_splade_tiny
def test_splade_tiny_documents_and_empty_input():
    encoder = load_sparse_encoder(load_spec("splade-tiny"))
    docs = encoder.encode_documents(["Smoking raises the risk of heart disease.", ""])
    assert {"heart", "risk", "smoking"} <= set(docs[0]) and {"heart", "risk"} <= set(sorted(docs[0], key=docs[0].get, reverse=True)[:8])
    # An empty document is still [CLS] [SEP] for a model trained with special tokens: a small, valid vector.
    assert all(w > 0 for w in docs[1].values())
    assert encoder.encode_documents([]) == [] and encoder.encode_queries([]) == []


@needs_splade_tiny
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_screened_head_bound_holds_and_output_equals_the_fp32_head(precision):
    """Each screen's error stays inside its bound on real SciFact documents, it prunes most of the vocabulary,
    and the encoder's quantised vectors equal those of the all-fp32 head, term for term."""
    from itertools import islice

    from laconic_pyserini.data import iter_corpus, resolve_dataset
    docs = [d.contents for d in islice(iter_corpus(resolve_dataset("scifact")), 64)]
    spec = load_spec("splade-tiny")
    screened, plain = load_sparse_encoder(spec, screen=precision), load_sparse_encoder(spec, screen=False)
    assert screened._screened is not None and plain._screened is None
    assert [quantize(v) for v in screened.encode_documents(docs)] == \
        [quantize(v) for v in plain.encode_documents(docs)]

    ids, mask = screened.tokenize(docs[:8])
    with torch.inference_mode():
        hidden = screened._body(input_ids=ids, attention_mask=mask).last_hidden_state
        _, approx, slack = screened._screened.screen(hidden, mask)
        exact = screened.model.cls(hidden).masked_fill(~mask.bool()[:, :, None], float("-inf")).amax(dim=1)
    error = (approx - exact).abs()
    assert bool((error <= slack).all())
    assert error.max() > 0  # the screen really differs: the bound is doing work
    candidates = ((approx + slack) > 0).sum(dim=1)
    # ~940 (bf16) and ~690 (int8) of 30,522 per SciFact document
    assert bool((candidates < 0.1 * screened.vocab_size).all())
    assert bool((candidates >= ((exact > 0).sum(dim=1))).all())


def test_folder_named_like_a_decoder_but_holding_bert_loads_as_mlm(tmp_path):
    folder = tmp_path / "ance-splade-llama"
    config = transformers.BertConfig(vocab_size=SPLADE_VOCAB, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64)
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    if (SPLADE_TINY / "tokenizer.json").exists():
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).write_bytes((SPLADE_TINY / name).read_bytes())
    spec = load_spec(str(folder))
    assert spec.kind == "mlm" and spec.add_special_tokens and spec.query_prefix == ""
    if (folder / "tokenizer.json").exists():
        vector = load_sparse_encoder(spec).encode_queries(["heart attack"])[0]
        assert all(isinstance(t, str) and isinstance(w, float) and w > 0 for t, w in vector.items())
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]


SPLADE_VOCAB = 30522


# -------------------------------------------------------------------------------------------- SmolLM2 (GGUF)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_smollm2_gguf_through_the_laconic_path():
    """A real Llama-architecture checkpoint: GGUF weights and tokenizer, bidirectional, no BOS, top-512 terms."""
    model_dir("smollm2-135m-gguf", needs=SMOLLM2_GGUF)
    encoder = load_sparse_encoder(load_spec("smollm2-135m"), dtype="fp32")
    assert is_bidirectional(encoder.model) and encoder.vocab_size == 49_152
    fed = []
    handle = encoder.model.get_input_embeddings().register_forward_pre_hook(lambda m, args: fed.append(args[0]))
    try:
        vectors = encoder.encode_queries(["what are the symptoms of a heart attack", "aspirin"])
    finally:
        handle.remove()
    assert not set(torch.cat([ids.flatten() for ids in fed]).tolist()) & special_token_ids(encoder.tokenizer)
    assert encoder.tokenizer.convert_ids_to_tokens(fed[0][0, 0].item()) == "query"
    for vector in vectors:
        assert 0 < len(vector) <= 512 and all(w > 0 for w in vector.values())
    assert "Ġheart" in vectors[0]  # a word of the query is among its own top-512 terms


def test_gguf_checkpoint_is_converted_once_and_again_when_the_file_changes(tmp_path, monkeypatch):
    """A GGUF file is read by transformers once and kept as a plain folder (fp32 safetensors, config, tokenizer):
    the weights loaded from that folder are the ones a direct GGUF read gives, tensor for tensor, and a changed
    file gets a conversion of its own (keyed by content), never the stale one."""
    import shutil

    from transformers import AutoModelForCausalLM

    source = model_dir("smollm2-135m-gguf", needs=SMOLLM2_GGUF) / SMOLLM2_GGUF
    folder = tmp_path / "smol"
    folder.mkdir()
    shutil.copyfile(source, folder / SMOLLM2_GGUF)
    monkeypatch.setenv("LACONIC_GGUF_CACHE", str(tmp_path / "cache"))
    spec = load_spec(str(folder / SMOLLM2_GGUF))
    first = load_sparse_encoder(spec, dtype="fp32")
    conversions = sorted((tmp_path / "cache" / "transformers").iterdir())
    assert len(conversions) == 1 and (conversions[0] / "model.safetensors").is_file()
    direct = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    want = direct.state_dict()
    got = first.model.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(got[name], want[name]) for name in want)
    vectors = first.encode_queries(["what are the symptoms of a heart attack"])
    assert load_sparse_encoder(spec, dtype="fp32").encode_queries(["what are the symptoms of a heart attack"]) \
        == vectors  # the second load reads the conversion
    assert sorted((tmp_path / "cache" / "transformers").iterdir()) == conversions

    with open(folder / SMOLLM2_GGUF, "r+b") as f:  # other weights in the last tensor's blocks
        f.seek(-4096, 2)
        data = bytearray(f.read())
        f.seek(-4096, 2)
        f.write(bytes(b ^ 0x5A for b in data))
    changed = load_sparse_encoder(spec, dtype="fp32")
    assert len(list((tmp_path / "cache" / "transformers").iterdir())) == 2
    assert any(not torch.equal(changed.model.state_dict()[name], got[name]) for name in got)
