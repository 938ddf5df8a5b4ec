"""EncoderSpec: shipped specs, --encoder resolution (name, hub id, folder), kind from config, texts, quantisation."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS_ROOT, model_dir
from laconic_pyserini.quantize import quantize
from laconic_pyserini.spec import (SPEC_FILENAME, EncoderSpec, SpecError, known_specs, load_spec,
                                   resolve_model_location)



@pytest.fixture
def empty_models_root(tmp_path, monkeypatch) -> Path:
    """An empty $LACONIC_MODELS, so resolution does not depend on what this machine has unpacked."""
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv("LACONIC_MODELS", str(root))
    return root


def write_config(folder: Path, architectures: list[str], model_type: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": architectures, "model_type": model_type}))
    return folder


# -------------------------------------------------------------------------------------------- shipped specs


def test_shipped_specs_carry_the_laconic_contract():
    specs = known_specs()
    assert {"laconic-1b", "laconic-3b", "laconic-8b", "splade-tiny", "smollm2-135m", "minilm"} <= set(specs)
    for size in ("1b", "3b", "8b"):
        spec = specs[f"laconic-{size}"]
        assert spec.model == f"utahnlp/laconic-{size}"
        assert (spec.kind, spec.query_prefix, spec.passage_prefix, spec.add_special_tokens, spec.max_length,
                spec.pooling, spec.activation, spec.top_k, spec.quant_scale, spec.bidirectional) == \
               ("decoder", "query: ", "passage: ", False, 256, "max", "log1p_relu", 512, 100.0, True)
        assert spec.tokenizer == "unsloth/Llama-3.2-1B"  # ungated copy of the Llama-3.2 base tokenizer
    splade = specs["splade-tiny"]
    assert (splade.model, splade.kind, splade.add_special_tokens, splade.query_prefix, splade.top_k) == \
           ("rasyosef/splade-tiny", "mlm", True, "", None)
    smol = specs["smollm2-135m"]
    assert (smol.kind, smol.tokenizer, smol.add_special_tokens, smol.top_k) == ("decoder", None, False, 512)
    assert smol.gguf_file.endswith(".gguf")


def test_minilm_spec_agrees_with_the_models_own_config(tmp_path, monkeypatch):
    model_dir("all-MiniLM-L6-v2", needs="sentence_bert_config.json")
    shipped = known_specs()["minilm"]
    assert shipped.model == "sentence-transformers/all-MiniLM-L6-v2"
    # What the folder itself says, read from a copy under a neutral name (so it is not matched to the shipped spec).
    copy = tmp_path / "some-dense-model"
    copy.mkdir()
    for name in ("config.json", "sentence_bert_config.json", "modules.json"):
        (copy / name).write_bytes((MODELS_ROOT / "all-MiniLM-L6-v2" / name).read_bytes())
    (copy / "1_Pooling").mkdir()
    (copy / "1_Pooling" / "config.json").write_bytes((MODELS_ROOT / "all-MiniLM-L6-v2" / "1_Pooling" / "config.json")
                                                    .read_bytes())
    derived = load_spec(str(copy))
    assert (derived.kind, derived.pooling, derived.normalize, derived.max_length) == ("dense", "mean", True, 256)
    assert (shipped.kind, shipped.pooling, shipped.normalize, shipped.max_length) == \
           (derived.kind, derived.pooling, derived.normalize, derived.max_length)


# -------------------------------------------------------------------------------------------- resolution


def test_load_by_name_hub_id_and_local_copy(empty_models_root):
    assert load_spec("utahnlp/laconic-1b") == load_spec("laconic-1b")
    assert load_spec("rasyosef/splade-tiny") == load_spec("splade-tiny")
    local = write_config(empty_models_root / "splade-tiny", ["BertForMaskedLM"], "bert")
    assert load_spec(str(local)) == load_spec("splade-tiny")
    assert resolve_model_location("rasyosef/splade-tiny") == str(local)


def test_resolve_model_location(empty_models_root, tmp_path):
    assert resolve_model_location("utahnlp/laconic-1b") == "utahnlp/laconic-1b"  # not here: left to the hub
    (empty_models_root / "llama3-tokenizer").mkdir()
    (empty_models_root / "all-MiniLM-L6-v2").mkdir()
    assert resolve_model_location("meta-llama/Llama-3.2-1B") == str(empty_models_root / "llama3-tokenizer")
    assert resolve_model_location("meta-llama/Llama-3.1-8B") == str(empty_models_root / "llama3-tokenizer")
    assert resolve_model_location("sentence-transformers/all-MiniLM-L6-v2") == str(empty_models_root / "all-MiniLM-L6-v2")
    assert resolve_model_location(str(tmp_path)) == str(tmp_path.resolve())


def test_overrides_and_tokenizer(empty_models_root):
    spec = load_spec("laconic-1b", tokenizer="/somewhere/tok", max_length=128, top_k=None)
    assert (spec.tokenizer, spec.max_length, spec.top_k) == ("/somewhere/tok", 128, 512)  # None = not given
    with pytest.raises(SpecError, match="unknown encoder spec field"):
        load_spec("laconic-1b", max_len=3)


def test_unknown_encoder_is_a_clear_error(empty_models_root):
    with pytest.raises(SpecError, match="not a shipped spec.*laconic-1b.*not a local folder"):
        load_spec("no-such-encoder")


def test_a_hub_id_of_two_shipped_specs_is_an_error_naming_both(empty_models_root):
    # smollm2-135m (sparse) and smollm2-135m_dense share the SmolLM2 checkpoint: the hub id alone cannot choose.
    shared = known_specs()["smollm2-135m"].model
    assert known_specs()["smollm2-135m_dense"].model == shared
    with pytest.raises(SpecError, match=r"several shipped specs \(smollm2-135m, smollm2-135m_dense\)"):
        load_spec(shared)
    assert load_spec("smollm2-135m_dense").kind == "dense"


# -------------------------------------------------------------------------------------------- kind from config


@pytest.mark.parametrize("folder_name, architectures, model_type, kind", [
    ("ance-splade-llama", ["BertForMaskedLM"], "bert", "mlm"),
    ("laconic-1b-copy", ["DistilBertForMaskedLM"], "distilbert", "mlm"),
    ("splade-bert-performance", ["LlamaForCausalLM"], "llama", "decoder"),
    ("splade-dense", ["Qwen2ForCausalLM"], "qwen2", "decoder"),
    ("llama-contriever", ["BertModel"], "bert", "dense"),
])
def test_kind_comes_from_config_not_name(empty_models_root, tmp_path, folder_name, architectures, model_type, kind):
    spec = load_spec(str(write_config(tmp_path / folder_name, architectures, model_type)))
    assert spec.kind == kind
    assert spec.name == folder_name
    if kind == "decoder":  # an unknown decoder gets the LACONIC contract, not a BOS-on default
        assert (spec.add_special_tokens, spec.query_prefix, spec.top_k) == (False, "query: ", 512)
    if kind == "mlm":
        assert (spec.add_special_tokens, spec.query_prefix, spec.top_k) == (True, "", None)


def test_unknown_architecture_names_the_file(tmp_path):
    folder = write_config(tmp_path / "m", ["T5ForConditionalGeneration"], "t5")
    with pytest.raises(SpecError, match=r"config.json: architectures \['T5ForConditionalGeneration'\]"):
        load_spec(str(folder))


def test_lora_adapter_folder_takes_kind_from_its_base(empty_models_root, tmp_path):
    base = write_config(tmp_path / "base", ["LlamaForCausalLM"], "llama")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base),
                                                             "peft_type": "LORA"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")  # present: its contents are read only when loading
    spec = load_spec(str(adapter))
    assert (spec.kind, spec.base_model, spec.model) == ("decoder", str(base), str(adapter.resolve()))


def test_saved_spec_in_a_folder_is_used_as_is(tmp_path):
    folder = write_config(tmp_path / "trained", ["LlamaForCausalLM"], "llama")
    trained = replace(known_specs()["laconic-1b"], name="my-laconic", max_length=192)
    (folder / SPEC_FILENAME).write_text(json.dumps(trained.to_dict()))
    spec = load_spec(str(folder))
    assert spec == replace(trained, model=str(folder.resolve()))


# -------------------------------------------------------------------------------------------- texts, compat


def test_texts_follow_the_contract():
    spec = known_specs()["laconic-1b"]
    assert spec.query_text("heart attack") == "query: heart attack"
    assert spec.document_text("Title", "Body text") == "passage: Title Body text"
    assert spec.document_text("", "Body text") == "passage: Body text"
    assert spec.document_text("How do I?", "", as_query=True) == "query: How do I? "
    assert known_specs()["splade-tiny"].document_text("T", "x") == "T x"


def test_mismatch():
    specs = known_specs()
    laconic, splade = specs["laconic-1b"], specs["splade-tiny"]
    reason = laconic.mismatch(splade)
    assert reason and "kind 'decoder' vs 'mlm'" in reason and "add_special_tokens" in reason
    assert laconic.mismatch(replace(laconic, max_length=64, top_k=None)) is None
    assert "model" in laconic.mismatch(specs["laconic-3b"])
    assert "query_prefix" in laconic.mismatch(replace(laconic, query_prefix=""))
    assert "logit_offset 0.0 vs 12.0" in laconic.mismatch(replace(laconic, logit_offset=12.0))


def test_round_trip_and_validation():
    for spec in known_specs().values():
        assert EncoderSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(SpecError, match="unknown encoder spec field"):
        EncoderSpec.from_dict({"name": "x", "model": "y", "kind": "mlm", "max_len": 3})
    with pytest.raises(SpecError, match="kind 'sparse' is not one of"):
        EncoderSpec(name="x", model="y", kind="sparse")
    with pytest.raises(SpecError, match="max-pools"):
        EncoderSpec(name="x", model="y", kind="decoder", pooling="mean")
    # logit_offset: absent (every spec written before it existed) reads as 0; a YAML integer reads as a float
    assert all(spec.logit_offset == 0.0 for spec in known_specs().values())
    assert EncoderSpec.from_dict({"name": "x", "model": "y", "kind": "decoder", "logit_offset": 12}).logit_offset \
        == 12.0
    for bad in ("12", float("nan"), True):
        with pytest.raises(SpecError, match="logit_offset must be a finite number"):
            EncoderSpec.from_dict({"name": "x", "model": "y", "kind": "decoder", "logit_offset": bad})


def test_spec_module_imports_no_torch():
    import subprocess

    code = "import laconic_pyserini.spec, laconic_pyserini.quantize, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -------------------------------------------------------------------------------------------- quantize


def test_quantize_rule():
    assert quantize({"a": 0.5, "b": 1.5, "c": 2.5, "d": -1.0, "e": 0.49, "f": 0.0}, scale=1.0) == {"b": 2, "c": 2}
    assert quantize({"Ġheart": 2.3456, "Ġx": 0.004, "Ġy": 0.006}) == {"Ġheart": 235, "Ġy": 1}
    with pytest.raises(ValueError, match="NaN"):
        quantize({"a": float("nan")})


def test_quantize_matches_numpy_rint():
    rng = np.random.default_rng(0)
    weights = np.concatenate([rng.uniform(-1, 4, 5000), np.arange(0, 3, 0.005)]).astype(np.float32)
    vector = {f"t{i}": float(w) for i, w in enumerate(weights)}
    expected = {f"t{i}": int(q) for i, q in enumerate(np.rint(weights.astype(np.float64) * 100)) if q > 0}
    assert quantize(vector) == expected


def test_mismatch_sees_a_hub_id_and_its_local_copy_as_one(empty_models_root):
    (empty_models_root / "llama3-tokenizer").mkdir()
    laconic = known_specs()["laconic-1b"]
    assert laconic.mismatch(replace(laconic, tokenizer=str(empty_models_root / "llama3-tokenizer"))) is None
    assert "tokenizer" in laconic.mismatch(replace(laconic, tokenizer=str(empty_models_root)))
