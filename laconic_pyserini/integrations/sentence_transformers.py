"""A LACONIC-style sparse encoder as sentence-transformers modules, opened by :func:`.st_load.open_sparse_encoder`.

``modules.json`` names two classes of this package, imported by name from the installed package (the folder carries
no code):

- :class:`LaconicTransformer` (input module): loads the model through :func:`laconic_pyserini.modeling.load_model`
  (safetensors or GGUF, the bidirectional switch, LoRA merged, ``trust_remote_code`` always off), tokenises with
  our contract (no special tokens, ``split_special_tokens``, ``max_length``, padding masked) and returns the body's
  final hidden states;
- :class:`LaconicPooling`: the masked max-pool of the LM-head logits, then log1p(relu) and the top-k cut, by calling
  :meth:`laconic_pyserini.modeling.SparseEncoder.pool` (the chunked or bf16-screened head of ``modeling/``).

The prompts (``query: `` / ``passage: `` as the ``query`` / ``document`` prompts) and ``max_active_dims`` (top 512)
live in ``config_sentence_transformers.json``, so ``encode_query`` / ``encode_document`` add the prefixes themselves.
BEIR Quora and CQADupStack documents are questions: encode them with ``encode_document(texts, prompt_name="query")``.

Opening: ``open_sparse_encoder(folder)`` builds a real ``sentence_transformers.SparseEncoder`` from these modules.
sentence-transformers 6's own ``SparseEncoder(folder)`` refuses to import a ``modules.json`` class outside its
namespace unless its remote-code flag is set (:mod:`.st_load` says which line and why nothing else serves). Either
way the model and tokenizer load with ``trust_remote_code=False`` and no code is read from the folder or the hub.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules import InputModule, Module

from ..modeling.loading import load_model
from ..modeling.sparse_encoder import SparseEncoder as LaconicSparseEncoder
from ..spec import ACTIVATIONS, EncoderSpec, SpecError
from ..st_folder import HERE, POOLING_FIELDS, TRANSFORMER_CONFIG, TRANSFORMER_FIELDS

logger = logging.getLogger(__name__)

_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", "float32": "fp32", "bfloat16": "bf16", None: "fp32"}


def _located(value: str | None, folder: str | None) -> str | None:
    """A saved location: ``"."`` is the module's own folder (weights or tokenizer copied into it)."""
    if value != HERE:
        return value
    if folder is None:
        raise SpecError(f"a {TRANSFORMER_CONFIG} that names {HERE!r} needs the folder it was saved in")
    return str(folder)


class LaconicTransformer(InputModule):
    """Tokenises and runs the model body of a LACONIC-style (or SPLADE-style) encoder spec; see the module doc."""

    config_file_name = TRANSFORMER_CONFIG
    config_keys = list(TRANSFORMER_FIELDS)
    save_in_root = True

    def __init__(self, name: str, model: str, kind: str = "decoder", tokenizer: str | None = None,
                 base_model: str | None = None, gguf_file: str | None = None, add_special_tokens: bool = False,
                 max_length: int = 256, bidirectional: bool = True, quant_scale: float = 100.0, *,
                 folder: str | None = None, dtype: str = "fp32", screen: bool | str = "auto") -> None:
        super().__init__()
        self._saved = dict(name=name, model=model, kind=kind, tokenizer=tokenizer, base_model=base_model,
                           gguf_file=gguf_file, add_special_tokens=add_special_tokens, max_length=max_length,
                           bidirectional=bidirectional, quant_scale=quant_scale)
        spec = EncoderSpec(**dict(self._saved, model=_located(model, folder), tokenizer=_located(tokenizer, folder)))
        loaded = load_model(spec, dtype=dtype)
        self.encoder = LaconicSparseEncoder(spec, loaded, screen=screen)
        # A registered submodule, so that SparseEncoder.to(device), .parameters() and transformers_model see it.
        self.auto_model = loaded.model
        self.tokenizer = loaded.tokenizer

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             model_kwargs: dict[str, Any] | None = None, **kwargs) -> "LaconicTransformer":
        # kwargs may carry ST's remote-code flag among others: deliberately unused (see the module docstring).
        hub = dict(token=token, cache_folder=cache_folder, revision=revision, local_files_only=local_files_only)
        config = cls.load_config(model_name_or_path, subfolder=subfolder, **hub)
        if not config:
            raise SpecError(f"{model_name_or_path}: no {TRANSFORMER_CONFIG} in {subfolder or 'its root'}")
        folder = None
        if HERE in (config.get("model"), config.get("tokenizer")):
            folder = cls.load_dir_path(model_name_or_path, subfolder=subfolder, **hub)
        return cls(**config, folder=folder, dtype=_dtype(model_kwargs))

    # ------------------------------------------------------------------------------------------ ST interface

    def get_config_dict(self) -> dict[str, Any]:
        return dict(self._saved, max_length=self.encoder.spec.max_length)

    @property
    def max_seq_length(self) -> int:
        return self.encoder.spec.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        import dataclasses

        self.encoder.spec = dataclasses.replace(self.encoder.spec, max_length=value)

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` of ``prompt + text`` under our tokenisation contract."""
        if not all(isinstance(text, str) for text in inputs):
            # Not a TypeError: SparseEncoder would retry without the prompt.
            raise ValueError("LaconicTransformer encodes texts (str) only, not pairs or other modalities")
        texts = [(prompt or "") + text for text in inputs]
        input_ids, attention_mask = self.encoder.tokenize(texts)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        features["token_embeddings"] = self.encoder.hidden_states(features["input_ids"], features["attention_mask"])
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """The config; the weights (safetensors) and tokenizer too when they were copied into the folder."""
        if not safe_serialization:
            raise ValueError("LaconicTransformer saves safetensors only")
        self.save_config(output_path)
        if self._saved["model"] == HERE:
            self.auto_model.save_pretrained(output_path, safe_serialization=True)
        if self._saved["tokenizer"] == HERE or (self._saved["model"] == HERE and not self._saved["tokenizer"]):
            self.tokenizer.save_pretrained(output_path)


class LaconicPooling(Module):
    """Masked max-pool of the LM-head logits over the hidden states, log1p(relu) (minus ``logit_offset``) and the
    ``max_active_dims`` cut, through the :class:`LaconicTransformer` before it (the same head object)."""

    config_keys = list(POOLING_FIELDS)
    forward_kwargs = {"max_active_dims"}

    def __init__(self, activation: str = "log1p_relu", logit_offset: float = 0.0) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise SpecError(f"LaconicPooling activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.activation, self.logit_offset = activation, float(logit_offset)
        self._encoder: LaconicSparseEncoder | None = None

    def on_model_ready(self, model) -> None:
        transformers = [m for m in model._modules.values() if isinstance(m, LaconicTransformer)]
        if not transformers:
            raise SpecError("LaconicPooling pools the hidden states of a LaconicTransformer; the model has none")
        self._encoder = transformers[0].encoder

    def forward(self, features: dict[str, torch.Tensor], max_active_dims: int | None = None,
                **kwargs) -> dict[str, torch.Tensor]:
        if self._encoder is None:
            raise SpecError("LaconicPooling is not attached to a model yet (build it inside a SparseEncoder)")
        features["sentence_embedding"] = self._encoder.pool(
            features["token_embeddings"], features["attention_mask"], max_active_dims,
            activation=self.activation, offset=self.logit_offset)
        return features

    def get_embedding_dimension(self) -> int | None:
        return None if self._encoder is None else self._encoder.vocab_size

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)


def _dtype(model_kwargs: dict[str, Any] | None) -> str:
    """``model_kwargs={"dtype": torch.bfloat16}`` (or ``torch_dtype``) as our loader's dtype name."""
    value = (model_kwargs or {}).get("dtype", (model_kwargs or {}).get("torch_dtype"))
    if value not in _DTYPES:
        raise ValueError(f"LaconicTransformer loads fp32 or bf16 weights, not dtype {value!r}")
    return _DTYPES[value]


def module_type(cls: type) -> str:
    """The ``type`` that ``modules.json`` names for one of these classes."""
    return f"{cls.__module__}.{cls.__qualname__}"


def location_is_local(location: str | None) -> bool:
    return location is not None and Path(location).expanduser().exists()
