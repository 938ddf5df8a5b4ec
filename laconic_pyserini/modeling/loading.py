"""Loading an encoder's model and tokenizer from what its spec names.

Handled: merged checkpoints (safetensors folders), LoRA adapters (peft) over ``spec.base_model``, GGUF files through
transformers' gguf support, a tokenizer from a separate location (LACONIC checkpoints ship none), fp32, bf16 or
``auto`` (decided by what the CPU does fast, :func:`.cpu.resolve_dtype`), fp16 on a GPU, cpu or cuda.
``trust_remote_code`` is always off and HF folders must hold safetensors (no pickled weights). A download the hub
refuses for want of an accepted licence (a gated repository: ``GatedRepoError``, HTTP 401/403) becomes one
:class:`~laconic_pyserini.spec.SpecError` naming the licence page and the ungated way (:func:`gated_error`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..spec import EncoderSpec, SpecError, resolve_model_location
from .bidirectional import check_supported, make_bidirectional

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    location: str            # where the weights came from (a local folder, or a hub id)
    tokenizer_location: str
    dtype: str = "fp32"      # what the weights were loaded as (``auto`` resolved): fp32, bf16 or fp16 (GPU)


def torch_dtype(dtype: str) -> torch.dtype:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype!r} is not one of fp32, bf16, fp16") from None


def _pretrained_kwargs(gguf_file: str | None, dtype: torch.dtype) -> dict:
    kwargs = {"dtype": dtype, "trust_remote_code": False}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    else:
        kwargs["use_safetensors"] = True
    return kwargs


def _is_adapter(location: str) -> bool:
    return (Path(location) / "adapter_config.json").exists()


#: Where a gated model's licence is accepted: the repository's own page on the hub.
HUB_PAGE = "https://huggingface.co/{repo}"


def gated_error(exc: BaseException, repo: str) -> SpecError | None:
    """The error to show when loading ``repo`` failed because the hub wants an accepted licence, else None.

    transformers re-raises huggingface_hub's ``GatedRepoError`` (or a 401/403 ``HfHubHTTPError``) as an OSError;
    the cause chain is walked to find it.
    """
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    seen = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(seen, GatedRepoError) or (isinstance(seen, HfHubHTTPError) and status in (401, 403)):
            page = HUB_PAGE.format(repo=repo)
            return SpecError(
                f"{repo} is a gated repository and the hub refused the download (HTTP {status or 'gated'}): accept "
                f"its licence at {page} and log in (`hf auth login` or $HF_TOKEN), or use an ungated copy of the "
                "same files (for the Llama-3 tokenizer: --tokenizer "
                f"unsloth/Llama-3.2-1B), or a local folder under $LACONIC_MODELS")
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def hub_access(repo: str) -> Iterator[None]:
    """Turn a gated-repository refusal while loading ``repo`` into :func:`gated_error`'s message."""
    try:
        yield
    except OSError as exc:
        error = gated_error(exc, repo)
        if error is None:
            raise
        raise error from exc


def local_gguf(spec: EncoderSpec, location: str) -> Path | None:
    """The transformers folder a local GGUF checkpoint was converted to (:mod:`.gguf_cache`), else None."""
    if not spec.gguf_file or not (Path(location) / spec.gguf_file).is_file():
        return None
    from .gguf_cache import ensure_converted

    return ensure_converted(location, spec.gguf_file)


def load_tokenizer(spec: EncoderSpec, location: str):
    """The spec's tokenizer: its own location if it names one, else the model's (or the GGUF file's)."""
    from transformers import AutoTokenizer

    converted = None if spec.tokenizer else local_gguf(spec, location)
    if spec.tokenizer:
        where, kwargs = resolve_model_location(spec.tokenizer), {}
    elif converted is not None:
        with hub_access(location):
            return AutoTokenizer.from_pretrained(converted, trust_remote_code=False), location
    elif spec.gguf_file:
        where, kwargs = location, {"gguf_file": spec.gguf_file}
    elif _is_adapter(location) and not (Path(location) / "tokenizer.json").exists() and spec.base_model:
        where, kwargs = resolve_model_location(spec.base_model), {}
    else:
        where, kwargs = location, {}
    with hub_access(where):
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
    gguf_file = spec.gguf_file
    if gguf_file and family == "decoder" and (converted := local_gguf(spec, weights_location)) is not None:
        weights_location, gguf_file = str(converted), None
    kwargs = _pretrained_kwargs(gguf_file, torch_type)
    config_kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    with hub_access(weights_location):
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
    """The family asked for must agree with the checkpoint's own architecture (a name proves nothing), and the
    spec's max_length must fit the model's positions (a longer input fails deep inside the forward pass)."""
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and spec.max_length > positions:
        raise SpecError(f"--max-length {spec.max_length}: {where} has {positions} positions; pass at most "
                        f"--max-length {positions}")
    architectures = list(getattr(config, "architectures", None) or [])
    if not architectures:
        return  # GGUF configs carry a model_type only; check_supported vets decoders
    wanted = "ForCausalLM" if family == "decoder" else "ForMaskedLM"
    if not any(arch.endswith(wanted) for arch in architectures):
        raise SpecError(f"encoder {spec.name!r} is a {family} spec but {where} holds {architectures}; "
                        f"a {family} needs a *{wanted} checkpoint")
