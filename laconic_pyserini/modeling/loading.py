"""Loading an encoder's model and tokenizer from what its spec names.

Handled: merged checkpoints (safetensors folders), LoRA adapters (peft) over ``spec.base_model``, GGUF files through
transformers' gguf support, a tokenizer from a separate location (LACONIC checkpoints ship none), fp32, bf16 or
``auto`` (decided by what the CPU does fast, :func:`.cpu.resolve_dtype`), cpu or cuda. ``trust_remote_code`` is
always off and HF folders must hold safetensors (no pickled weights).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..spec import EncoderSpec, SpecError, resolve_model_location
from .bidirectional import check_supported, make_bidirectional

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    location: str            # where the weights came from (a local folder, or a hub id)
    tokenizer_location: str
    dtype: str = "fp32"      # what the weights were loaded as (``auto`` resolved): fp32 or bf16


def torch_dtype(dtype: str) -> torch.dtype:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype!r} is not one of fp32, bf16") from None


def _pretrained_kwargs(gguf_file: str | None, dtype: torch.dtype) -> dict:
    kwargs = {"dtype": dtype, "trust_remote_code": False}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    else:
        kwargs["use_safetensors"] = True
    return kwargs


def _is_adapter(location: str) -> bool:
    return (Path(location) / "adapter_config.json").exists()


def load_tokenizer(spec: EncoderSpec, location: str):
    """The spec's tokenizer: its own location if it names one, else the model's (or the GGUF file's)."""
    from transformers import AutoTokenizer

    if spec.tokenizer:
        where, kwargs = resolve_model_location(spec.tokenizer), {}
    elif spec.gguf_file:
        where, kwargs = location, {"gguf_file": spec.gguf_file}
    elif _is_adapter(location) and not (Path(location) / "tokenizer.json").exists() and spec.base_model:
        where, kwargs = resolve_model_location(spec.base_model), {}
    else:
        where, kwargs = location, {}
    return AutoTokenizer.from_pretrained(where, trust_remote_code=False, **kwargs), where


def load_model(spec: EncoderSpec, *, device: str = "cpu", dtype: str = "auto") -> LoadedModel:
    """The spec's model in eval mode on ``device``: a bidirectional ``*ForCausalLM`` for decoders (whose LM head
    the sparse head applies in chunks), a ``*ForMaskedLM`` for mlm. Dense kinds are loaded elsewhere.
    ``dtype="auto"``: bf16 for a decoder where bf16 matmuls are fast, else fp32 (:func:`.cpu.resolve_dtype`)."""
    if spec.kind not in ("decoder", "mlm"):
        raise SpecError(f"encoder {spec.name!r} is {spec.kind}; the sparse loader handles decoder and mlm kinds")
    return load_checkpoint(spec, spec.kind, device=device, dtype=dtype)


def load_checkpoint(spec: EncoderSpec, family: str, *, device: str = "cpu", dtype: str = "auto") -> LoadedModel:
    """The checkpoint the spec names, read as ``family`` (``decoder``: a ``*ForCausalLM``, made bidirectional when
    the spec says so; ``mlm``: a ``*ForMaskedLM``), whatever the spec's own kind: a dense spec on a decoder
    backbone loads its checkpoint as a decoder (GGUF, LoRA, tokenizer, bidirectional switch alike)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    from .cpu import resolve_dtype

    dtype = resolve_dtype(dtype, decoder=family == "decoder", device=device)
    torch_type = torch_dtype(dtype)
    location = resolve_model_location(spec.model)
    adapter = _is_adapter(location)
    if adapter and not spec.base_model:
        raise SpecError(f"{location} is a LoRA adapter but encoder {spec.name!r} names no base_model")
    weights_location = resolve_model_location(spec.base_model) if adapter else location
    kwargs = _pretrained_kwargs(spec.gguf_file, torch_type)
    config_kwargs = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
    config = AutoConfig.from_pretrained(weights_location, trust_remote_code=False, **config_kwargs)
    _check_kind(spec, family, config, weights_location)
    if family == "decoder" and spec.bidirectional:
        check_supported(config)  # before reading gigabytes of weights
    auto = AutoModelForCausalLM if family == "decoder" else AutoModelForMaskedLM
    model = auto.from_pretrained(weights_location, config=config, **kwargs)
    if adapter:
        from peft import PeftModel

        # Merging gives the plain architecture back: the bidirectional switch and the chunked head see one model,
        # and inference pays nothing for the adapter.
        model = PeftModel.from_pretrained(model, location).merge_and_unload()
    if family == "decoder" and spec.bidirectional:
        make_bidirectional(model)
    model.eval().to(device)
    tokenizer, tokenizer_location = load_tokenizer(spec, location)
    return LoadedModel(model=model, tokenizer=tokenizer, location=location, tokenizer_location=tokenizer_location,
                       dtype=dtype)


def _check_kind(spec: EncoderSpec, family: str, config, where: str) -> None:
    """The family asked for must agree with the checkpoint's own architecture (a name proves nothing)."""
    architectures = list(getattr(config, "architectures", None) or [])
    if not architectures:
        return  # GGUF configs carry a model_type only; check_supported vets decoders
    wanted = "ForCausalLM" if family == "decoder" else "ForMaskedLM"
    if not any(arch.endswith(wanted) for arch in architectures):
        raise SpecError(f"encoder {spec.name!r} is a {family} spec but {where} holds {architectures}; "
                        f"a {family} needs a *{wanted} checkpoint")
