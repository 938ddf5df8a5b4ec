"""Write an encoder spec as a folder that sentence-transformers' ``SparseEncoder`` opens.

- a decoder (LACONIC) spec → ``LaconicTransformer`` + ``LaconicPooling`` (:mod:`.sentence_transformers`); open it
  with ``laconic_pyserini.integrations.open_sparse_encoder(folder)`` (why not ``SparseEncoder(folder)``:
  :mod:`.st_load`). Weights named by a hub id stay **referenced** (the folder is a few JSON files; the model
  loads from ``$LACONIC_MODELS`` or the hub through our loader, as ``--encoder`` does), weights in a local folder
  or GGUF file are **copied** as safetensors (LoRA merged, GGUF dequantised), so the folder moves between
  machines; a local tokenizer is copied too;
- an mlm (SPLADE) spec → sentence-transformers' own ``Transformer`` (fill-mask) + ``SpladePooling`` (max, relu =
  log1p(relu)), weights copied as safetensors: a standard SPLADE folder, ``SparseEncoder(folder)`` with no argument.

Prompts become the ``query`` / ``document`` prompts and ``top_k`` becomes ``max_active_dims``. The output is a new
folder, or this function's own earlier output (recognised by ``laconic_export.json``), rebuilt aside and swapped in.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from ..errors import LaconicError
from ..outputs import check_not_inside_output, claim_folder, fresh_aside, remove_temp, swap_in
from ..spec import EncoderSpec, load_spec
from ..st_folder import HERE, TRANSFORMER_CONFIG, TRANSFORMER_FIELDS

logger = logging.getLogger(__name__)

MARKER = "laconic_export.json"
MARKER_KIND = "sentence-transformers-sparse-encoder"


class ExportError(LaconicError, ValueError):
    """An export that cannot be written; the message says what to do."""


def export_sentence_transformers(encoder: str, output: str | os.PathLike, *, tokenizer: str | None = None) -> Path:
    """Write ``encoder`` (a spec name, hub id or local folder, as ``--encoder`` takes) into ``output``; returns it."""
    spec = load_spec(encoder, tokenizer=tokenizer)
    if spec.kind == "dense":
        raise ExportError(f"encoder {spec.name!r} is dense; export writes sparse encoders (SparseEncoder folders)")
    output = Path(output)
    # A new or empty folder, or this command's own earlier export (its marker says so): nothing else is written.
    check_not_inside_output(output, flag="--output")
    claim_folder(output, MARKER_KIND, flag="--output", ours=_is_our_export)
    staging = fresh_aside(output)
    try:
        weights = _write_laconic(spec, staging) if spec.kind == "decoder" else _write_splade(spec, staging)
        marker = {"kind": MARKER_KIND, "source": str(encoder), "weights": weights, "spec": spec.to_dict(),
                  "package_version": _version()}
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        swap_in(staging, output, MARKER_KIND, flag="--output", ours=_is_our_export)
    finally:
        remove_temp(staging)  # our own partial build, if the swap did not happen
    logger.info("%s: %s (weights %s)", output, spec.name, weights)
    return output


def _is_our_export(folder: Path) -> bool:
    """An export of this command: it carries ``laconic_export.json`` (an ST folder has no manifest.json of ours)."""
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")).get("kind") == MARKER_KIND
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def _is_local(location: str | None) -> bool:
    return location is not None and Path(location).expanduser().exists()


def _write_laconic(spec: EncoderSpec, folder: Path) -> str:
    """The LACONIC modules; returns whether the weights were ``copied`` or ``referenced``."""
    from ..modeling.loading import load_model, load_tokenizer
    from .sentence_transformers import LaconicPooling, LaconicTransformer, module_type

    saved = {field: getattr(spec, field) for field in TRANSFORMER_FIELDS}
    copy = _is_local(spec.model)
    if copy:
        # fp32 whatever this CPU runs fast: the copy must hold the weights as they are, not rounded to bf16.
        loaded = load_model(spec, dtype="fp32")  # LoRA merged, GGUF dequantised, bidirectional switch applied
        loaded.model.save_pretrained(folder, safe_serialization=True)
        loaded.tokenizer.save_pretrained(folder)
        saved.update(model=HERE, tokenizer=None, base_model=None, gguf_file=None)
    elif _is_local(spec.tokenizer):
        tokenizer, _ = load_tokenizer(spec, spec.model)
        tokenizer.save_pretrained(folder)
        saved["tokenizer"] = HERE
    (folder / TRANSFORMER_CONFIG).write_text(json.dumps(saved, indent=4) + "\n", encoding="utf-8")
    pooling = folder / "1_LaconicPooling"
    pooling.mkdir()
    (pooling / "config.json").write_text(json.dumps({"activation": spec.activation,
                                                     "logit_offset": spec.logit_offset}, indent=4) + "\n",
                                         encoding="utf-8")
    modules = [{"idx": 0, "name": "0", "path": "", "type": module_type(LaconicTransformer)},
               {"idx": 1, "name": "1", "path": pooling.name, "type": module_type(LaconicPooling)}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    (folder / "config_sentence_transformers.json").write_text(json.dumps(_st_config(spec), indent=2) + "\n",
                                                                encoding="utf-8")
    return "copied" if copy else "referenced"


def _st_config(spec: EncoderSpec) -> dict:
    from importlib.metadata import version

    config = {"model_type": "SparseEncoder",
              "__version__": {name: version(name) for name in ("sentence-transformers", "transformers", "torch")},
              "prompts": {"query": spec.query_prefix, "document": spec.passage_prefix},
              "default_prompt_name": None, "similarity_fn_name": "dot"}
    if spec.top_k is not None:
        config["max_active_dims"] = spec.top_k
    return config


def _write_splade(spec: EncoderSpec, folder: Path) -> str:
    """sentence-transformers' own SPLADE modules over the weights our loader reads (safetensors only)."""
    unsupported = [f"{name} {value!r}" for name, value, ok in (
        ("activation", spec.activation, "log1p_relu"), ("logit_offset", spec.logit_offset, 0.0),
        ("add_special_tokens", spec.add_special_tokens, True)) if value != ok]
    if unsupported:
        raise ExportError(f"encoder {spec.name!r}: {', '.join(unsupported)} has no SpladePooling equivalent; "
                          f"export needs activation log1p_relu, logit_offset 0 and special tokens on")
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    from ..modeling.loading import load_model

    loaded = load_model(spec, dtype="fp32")
    with tempfile.TemporaryDirectory(prefix=".hf-", dir=folder) as hf:
        loaded.model.save_pretrained(hf, safe_serialization=True)
        loaded.tokenizer.save_pretrained(hf)
        transformer = Transformer(hf, transformer_task="fill-mask", max_seq_length=spec.max_length)
        model = SparseEncoder(modules=[transformer, SpladePooling("max", "relu")], device="cpu",
                              prompts={"query": spec.query_prefix, "document": spec.passage_prefix},
                              max_active_dims=spec.top_k, similarity_fn_name="dot")
        model.save(str(folder), create_model_card=False)
    return "copied"


def _version() -> str:
    from .. import __version__

    return __version__

