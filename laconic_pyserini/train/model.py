"""The model being trained: the encoder's own bidirectional decoder and sparse head, with LoRA adapters.

Loading, the bidirectional switch, tokenisation (no special tokens, prefixes, padding) and the chunked
max-pool → log1p(relu) head all come from :mod:`laconic_pyserini.modeling`, so what is trained is exactly what
``python -m laconic_pyserini.encode`` will run (the spec's ``logit_offset`` included). Only top-k is left out while
training: every term gets a gradient.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import torch

from ..outputs import claim_folder, fresh_aside, swap_in
from ..spec import LACONIC_CONTRACT, SPEC_FILENAME, EncoderSpec, SpecError, load_spec
from .config import LoraConfig, ModelConfig

OUTPUT_KIND = "trained-encoder"

logger = logging.getLogger(__name__)


def backbone_spec(model: ModelConfig) -> EncoderSpec:
    """The encoder spec of the backbone: a shipped spec, a local folder (a phase-1 output carries its own), or a
    hub id of a base decoder that has no spec yet, which gets the LACONIC contract. ``model.logit_offset``, when
    set, replaces the spec's offset (the written encoder carries the one trained with)."""
    try:
        spec = load_spec(model.backbone, tokenizer=model.tokenizer)
    except SpecError:
        if Path(model.backbone).expanduser().exists():
            raise
        spec = EncoderSpec(name=model.backbone.rsplit("/", 1)[-1], model=model.backbone, kind="decoder",
                           tokenizer=model.tokenizer, **LACONIC_CONTRACT)
    if spec.kind != "decoder":
        raise SpecError(f"model.backbone {model.backbone!r} is a {spec.kind} model; LACONIC training needs a "
                        f"decoder (*ForCausalLM) checkpoint")
    if model.logit_offset is not None:
        spec = dataclasses.replace(spec, logit_offset=float(model.logit_offset))
    return spec


class SparseBiEncoder(torch.nn.Module):
    """Queries and passages → B×V term weights in one forward call (DDP needs one forward per backward)."""

    def __init__(self, peft_model, vocab_size: int, activation: str, logit_offset: float = 0.0) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.vocab_size = vocab_size
        self.activation = activation
        self.logit_offset = logit_offset

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from ..modeling.sparse_head import lm_head_function, sparse_pool

        base = self.peft_model.get_base_model()
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return sparse_pool(hidden, attention_mask, lm_head_function(base), self.vocab_size, activation=self.activation,
                           offset=self.logit_offset)

    def forward(self, query_ids, query_mask, passage_ids, passage_mask) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(query_ids, query_mask), self.encode(passage_ids, passage_mask)


@dataclasses.dataclass
class Trainable:
    module: SparseBiEncoder
    spec: EncoderSpec
    tokenizer: object
    query_tokenizer: object    # SpecTokenizer at the query max length
    passage_tokenizer: object  # SpecTokenizer at the passage max length


def build_trainable(spec: EncoderSpec, lora: LoraConfig, *, query_max_length: int, passage_max_length: int,
                    device: str = "cpu", dtype: str = "fp32", gradient_checkpointing: bool = False,
                    center_head: bool = False) -> Trainable:
    """Load the backbone through the encoder's loader (bidirectional already), optionally centre its LM head
    (:mod:`..modeling.head_centering`), then add LoRA adapters to the attention and MLP projections; the embeddings
    and LM head stay frozen."""
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    from ..modeling.loading import load_model
    from ..modeling.tokenization import SpecTokenizer

    loaded = load_model(spec, device=device, dtype=dtype)
    model = loaded.model
    if center_head:
        from ..modeling.head_centering import center_lm_head

        logger.info("LM head centred (mean row of norm %.3f removed)", center_lm_head(model))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    peft_config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, peft_config)
    peft_model.train()
    vocab_size = model.get_output_embeddings().weight.shape[0]
    module = SparseBiEncoder(peft_model, vocab_size, spec.activation, spec.logit_offset)
    # Tokenisers only: a SparseEncoder here would hold a second (screening) copy of the LM head for nothing.
    query_tok = SpecTokenizer(dataclasses.replace(spec, max_length=query_max_length), loaded.tokenizer, vocab_size)
    passage_tok = SpecTokenizer(dataclasses.replace(spec, max_length=passage_max_length), loaded.tokenizer,
                                vocab_size)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    logger.info("LoRA r=%d alpha=%d on %s: %d trainable of %d parameters", lora.r, lora.alpha,
                ",".join(lora.target_modules), trainable, total)
    return Trainable(module, spec, loaded.tokenizer, query_tok, passage_tok)


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (the LoRA weights), by name, detached on the CPU."""
    return {name: p.detach().cpu().clone() for name, p in module.named_parameters() if p.requires_grad}


def output_spec(spec: EncoderSpec, name: str, out_dir: Path, *, merged: bool) -> EncoderSpec:
    """The spec written next to the trained weights: same contract, the folder as the model, its own tokenizer."""
    if merged:
        return dataclasses.replace(spec, name=name, model=str(out_dir), tokenizer=None, base_model=None,
                                   gguf_file=None)
    return dataclasses.replace(spec, name=name, model=str(out_dir), tokenizer=None,
                               base_model=spec.base_model or spec.model)


def _forget_dequantized_gguf(model) -> None:
    """A GGUF checkpoint loaded without GGUF kernels is dequantized into ordinary float weights, but transformers
    still marks the model as quantized and refuses to save it. Drop the mark when every weight is a plain float."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    tensors = list(model.parameters()) + list(model.buffers())
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if str(getattr(method, "value", method)) != "gguf" or not all(t.is_floating_point() for t in tensors):
        raise ValueError(f"the trained model is quantized ({method}) and holds packed weights; train from a float "
                         "checkpoint (safetensors) to save merged weights")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def save_output(trainable: Trainable, out_dir: str | os.PathLike, *, name: str, merge: bool,
                extra: dict | None = None) -> Path:
    """Write the trained encoder to ``out_dir`` (built aside and swapped in when complete, replacing only an
    earlier trained encoder): merged safetensors (or the LoRA adapter), the tokenizer, ``encoder_spec.json`` and
    ``training.json``.

    Merging changes the model in place, so call this once, at the end."""
    out_dir = Path(out_dir)
    claim_folder(out_dir, OUTPUT_KIND, flag="the output folder", ours=_is_trained_encoder)
    partial = fresh_aside(out_dir)
    peft_model = trainable.module.peft_model
    if merge:
        model = peft_model.merge_and_unload()
        _forget_dequantized_gguf(model)
        if not getattr(model.config, "architectures", None):
            # GGUF-loaded configs carry no architectures; the spec loader decides the kind from them.
            model.config.architectures = [type(model).__name__]
        model.save_pretrained(partial, safe_serialization=True)
    else:
        peft_model.peft_config["default"].base_model_name_or_path = trainable.spec.base_model or trainable.spec.model
        peft_model.save_pretrained(partial, safe_serialization=True)
    trainable.tokenizer.save_pretrained(partial)
    spec = output_spec(trainable.spec, name, out_dir, merged=merge)
    data = spec.to_dict()
    del data["model"]  # a folder's spec names no path: the loader uses the folder it was found in
    (partial / SPEC_FILENAME).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if extra is not None:
        (partial / "training.json").write_text(json.dumps(extra, indent=2, default=str) + "\n", encoding="utf-8")
    return swap_in(partial, out_dir, OUTPUT_KIND, flag="the output folder", ours=_is_trained_encoder)


def _is_trained_encoder(folder: Path) -> bool:
    """An encoder folder written by save_output: it carries its spec file (and no manifest.json)."""
    return (folder / SPEC_FILENAME).is_file()
