"""Texts → sparse term-weight dicts, for LACONIC-style decoders and SPLADE-style MLMs behind one interface."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..spec import EncoderSpec, SpecError
from . import LLAMA_CPP_SCHEMES
from .cpu import KernelDecision, kernel_decision, warn_once
from .loading import LoadedModel, load_model
from .screened_head import LinearHead, ScreenedHead, split_head
from .sparse_head import (DEFAULT_BLOCK_BYTES, DEFAULT_CHUNK_BYTES, activate, exact_max_pool, keep_top_k,
                          lm_head_function, sparse_pool)
from .tokenization import SpecTokenizer

logger = logging.getLogger(__name__)


def mlm_head_function(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The MLM prediction head (transform + vocabulary projection) of the supported encoder families."""
    model_type = model.config.model_type
    if model_type == "bert":
        return model.cls
    if model_type in ("roberta", "xlm-roberta", "camembert"):
        return model.lm_head
    if model_type == "distilbert":
        def head(hidden: torch.Tensor) -> torch.Tensor:
            hidden = model.vocab_layer_norm(model.activation(model.vocab_transform(hidden)))
            return model.vocab_projector(hidden)
        return head
    raise ValueError(f"no chunked MLM head for model_type {model_type!r}; supported: bert, roberta, xlm-roberta, "
                     f"camembert, distilbert")


def vocabulary_terms(tokenizer, vocab_size: int) -> list[str | None]:
    """The term string of each logit row; rows past the tokenizer's vocabulary (padded embedding matrices) have
    none."""
    terms = tokenizer.convert_ids_to_tokens(list(range(min(vocab_size, len(tokenizer)))))
    return terms + [None] * (vocab_size - len(terms))


class SparseEncoder:
    """Encodes queries and documents into ``{term: weight}`` dicts following ``spec``.

    Weights are post-activation (log1p(relu) of the max-pooled logits), top-k applied when the spec asks for it;
    terms are raw vocabulary strings (``Ġheart`` for Llama-3, ``heart`` / ``##ing`` for BERT wordpieces).

    The head of an fp32 model runs one of three kernels with identical impacts (floats equal up to fp32
    rounding) (``self.head_kernel``):

    - ``screened-int8`` / ``screened-bf16``: the vocabulary projection is screened in int8 or bf16 and only the
      terms that can survive activation and top-k are computed in fp32 (:mod:`.screened_head`); int8 is fast on
      AVX2 and later x86 CPUs, bf16 only where bf16 matmuls are (AVX512_BF16 / AMX);
    - ``fp32-exact``: every logit in fp32, over each sequence's real tokens only, a cache-sized block of the
      vocabulary at a time (:func:`.sparse_head.exact_max_pool`); where no screen pays.

    ``screen="auto"`` (the default) picks by :func:`.cpu.kernel_decision` on CPU, and screens in bf16 on CUDA (as
    before); ``"int8"``, ``"bf16"`` (or ``True``) and ``False`` force one (a forced screen on a CPU where its
    product is slow logs one warning; int8 where ``torch._int_mm`` is not exact is refused). A bf16 model, or a
    head that cannot be split, runs the chunked ``model-dtype`` head. ``self.kernels`` records the choice for
    manifests.
    """

    def __init__(self, spec: EncoderSpec, loaded: LoadedModel, *, device: str = "cpu",
                 budget_bytes: int = DEFAULT_CHUNK_BYTES, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 screen: bool | str = "auto", decision: KernelDecision | None = None,
                 quantized: dict | None = None) -> None:
        self.spec = spec
        #: What :func:`.quantized.quantize_model` made of the model, or None (full precision).
        self.quantized = quantized
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = torch.device(device)
        self.budget_bytes = budget_bytes  # the model-dtype (chunked) head's logits per chunk
        self.block_bytes = block_bytes    # the fp32-exact and screened heads' logits per vocabulary block
        if spec.kind == "decoder":
            self._body = self.model.get_decoder()
            self._head = lm_head_function(self.model)
        else:
            self._body = getattr(self.model, self.model.base_model_prefix)
            self._head = mlm_head_function(self.model)
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.tokenization = SpecTokenizer(spec, self.tokenizer, self.vocab_size)
        self.terms = vocabulary_terms(self.tokenizer, self.vocab_size)
        self.decision = decision or kernel_decision()
        self._split: LinearHead | None = split_head(self.model, spec.kind)
        self.head_kernel = self._choose_head(screen)
        precision = self.head_kernel.removeprefix("screened-")
        self._screened = ScreenedHead(self._split, precision=precision, block_bytes=block_bytes) \
            if self.head_kernel.startswith("screened-") else None

    def _choose_head(self, screen: bool | str) -> str:
        if screen not in ("auto", True, False, "int8", "bf16"):
            raise ValueError(f"screen must be 'auto', 'int8', 'bf16', True (bf16) or False, not {screen!r}")
        if self._split is None or self._split.weight.dtype != torch.float32:
            return "model-dtype"
        on_cpu = self.device.type == "cpu"
        if screen == "auto":
            if not on_cpu:
                return "screened-bf16"
            return {"int8": "screened-int8", "bf16": "screened-bf16"}.get(self.decision.screen, "fp32-exact")
        if screen is False:
            return "fp32-exact"
        precision = "bf16" if screen is True else screen
        if precision == "int8" and (not on_cpu or self.decision.int8_matmul == "inexact"):
            raise ValueError("screen='int8' needs torch._int_mm computing exactly on this CPU "
                             f"({'not a CPU' if not on_cpu else 'it does not here'}); use screen='auto'")
        if on_cpu and not getattr(self.decision, f"{precision}_fast"):
            warn_once(f"screen-{precision}", f"screen={screen!r} on a CPU where {precision} matmuls are slow: the "
                                             "screened head is slower than the exact fp32 head here; leave "
                                             "screen='auto'")
        return f"screened-{precision}"

    @property
    def kernels(self) -> dict:
        """What this encoder runs: its dtype, its head kernel and the CPU decision behind them (JSON)."""
        dtype = {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(self.model.dtype, str(self.model.dtype))
        return {"dtype": dtype, "head": self.head_kernel, "device": str(self.device),
                "quantize": (self.quantized or {}).get("quantize", "none"),
                **({"quantized": self.quantized} if self.quantized else {}), "cpu": self.decision.to_dict()}

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights a batch-1 forward reads (the bandwidth floor's numerator)."""
        from .quantized import weight_bytes

        return weight_bytes(self.model)

    # ---------------------------------------------------------------------------------------- tokenising

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask`` of already-prefixed texts, cut at ``max_length``."""
        return self.tokenization.tokenize(texts)

    def tokenize_lengths(self, texts: list[str]) -> list[int]:
        """Token counts (capped at ``max_length``) of texts as ``encode_documents`` would see them."""
        return self.tokenization.tokenize_lengths(texts)

    # ---------------------------------------------------------------------------------------- encoding

    @torch.inference_mode()
    def encode_weights(self, texts: list[str], *, full: bool = False) -> torch.Tensor:
        """B×V float32 term weights of already-prefixed texts: the spec's top-k applied, or every term's weight
        with ``full`` (for analyses that compare the cut vectors with the whole ones)."""
        top_k = None if full else self.spec.top_k
        input_ids, attention_mask = self.tokenize(texts)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        return self.pool(self.hidden_states(input_ids, attention_mask), attention_mask, top_k)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """B×L×H final hidden states of the model's body, the input of the LM (or MLM) head."""
        if self.spec.kind == "decoder":
            return self._body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return self._body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor, top_k: int | None, *,
             activation: str | None = None, offset: float | None = None) -> torch.Tensor:
        """B×V float32 term weights of hidden states: the masked max-pool of the head's logits, the activation
        (the spec's ``activation`` and ``logit_offset`` unless given) and the ``top_k`` cut (None: no cut).

        The sentence-transformers modules (:mod:`laconic_pyserini.integrations`) call this too, so both APIs
        share one head. The screened head is used when its bf16 copy lives where ``hidden`` does.
        """
        activation = self.spec.activation if activation is None else activation
        offset = self.spec.logit_offset if offset is None else offset
        if self._screened is not None and self._screened.device == hidden.device:
            weights = activate(self._screened(hidden, attention_mask, top_k, offset), activation, offset)
        elif self.head_kernel == "fp32-exact":
            # Split afresh: a caller may have replaced the head's weight since (train.probe centres it).
            weights = activate(exact_max_pool(hidden, attention_mask, split_head(self.model, self.spec.kind),
                                              block_bytes=self.block_bytes), activation, offset)
        else:
            weights = sparse_pool(hidden, attention_mask, self._head, self.vocab_size, activation=activation,
                                  offset=offset, budget_bytes=self.budget_bytes)
        return keep_top_k(weights, top_k)

    def _to_dicts(self, weights: torch.Tensor) -> list[dict[str, float]]:
        weights = weights.cpu()
        vectors = []
        for row in weights:
            ids = torch.nonzero(row > 0).squeeze(1)
            values = row[ids].tolist()
            vectors.append({self.terms[i]: v for i, v in zip(ids.tolist(), values) if self.terms[i] is not None})
        return vectors

    def encode_queries(self, texts: list[str]) -> list[dict[str, float]]:
        if not texts:
            return []
        return self._to_dicts(self.encode_weights([self.spec.query_text(t) for t in texts]))

    def encode_documents(self, texts: list[str], as_query: bool = False) -> list[dict[str, float]]:
        """``texts`` are a document's contents ("title text"); the spec's passage (or query) prefix is added here."""
        if not texts:
            return []
        prefixed = [self.spec.document_text("", t, as_query=as_query) for t in texts]
        return self._to_dicts(self.encode_weights(prefixed))


class LlamaCppSparseEncoder(SparseEncoder):
    """A :class:`SparseEncoder` whose model runs in llama.cpp (:class:`.llamacpp.LlamaCppRunner`, ``--quantize
    q8_0|q4_0``); tokenisation, the activation, the top-k cut and the term strings are this module's own, and the
    max-pool is over each text's own tokens (llama.cpp gets no padding)."""

    def __init__(self, spec: EncoderSpec, tokenizer, runner, scheme: str) -> None:
        self.spec, self.tokenizer, self.runner = spec, tokenizer, runner
        self.model = None
        self.device = torch.device("cpu")
        self.vocab_size = runner.n_vocab
        self.tokenization = SpecTokenizer(spec, tokenizer, self.vocab_size)
        self.terms = vocabulary_terms(tokenizer, self.vocab_size)
        self.decision = kernel_decision()
        self.head_kernel = f"llama.cpp-{scheme}"
        self._screened = self._split = None
        self.quantized = {"quantize": scheme, "body": f"llama.cpp-{scheme}", "lm_head": f"llama.cpp-{scheme}",
                          "activations": "fp32 (quantised per block of 32 into the products)", **runner.describe()}

    @property
    def kernels(self) -> dict:
        return {"dtype": "fp32", "head": self.head_kernel, "device": "cpu", "quantize": self.quantized["quantize"],
                "quantized": self.quantized, "cpu": self.decision.to_dict()}

    @property
    def weight_bytes(self) -> int:
        return self.runner.weight_bytes

    def encode_weights(self, texts: list[str], *, full: bool = False) -> torch.Tensor:
        sequences = self.tokenization.token_ids(texts, self.spec.max_length)
        pooled = torch.from_numpy(self.runner.max_logits(sequences))
        weights = activate(pooled, self.spec.activation, self.spec.logit_offset)
        return keep_top_k(weights, None if full else self.spec.top_k)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise SpecError("a llama.cpp encoder (--quantize q8_0/q4_0) gives term weights, not hidden states; load "
                        "the encoder without --quantize (or with int8) for this")

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor, top_k: int | None, **kwargs) -> torch.Tensor:
        return self.hidden_states(hidden, attention_mask)


def load_sparse_encoder(spec: EncoderSpec, *, device: str = "cpu", dtype: str = "auto",
                        screen: bool | str = "auto", quantize: str = "none") -> SparseEncoder:
    """A :class:`SparseEncoder` for a decoder or mlm spec (see :func:`laconic_pyserini.modeling.loading.load_model`);
    ``dtype`` and ``screen`` default to what this CPU runs fast (:mod:`.cpu`). ``quantize`` (``int8``/``int4``,
    decoders on CPU only) loads the weights in bf16 and quantises them (:mod:`.quantized`); ``q8_0``/``q4_0`` run
    them in llama.cpp (:mod:`.llamacpp`)."""
    if quantize == "none":
        return SparseEncoder(spec, load_model(spec, device=device, dtype=dtype), device=device, screen=screen)
    from .quantized import check_scheme, quantize_model

    check_scheme(quantize, spec.kind, device=device, dtype=dtype)
    if quantize in LLAMA_CPP_SCHEMES:
        from .llamacpp import load_runner

        runner, tokenizer = load_runner(spec, quantize)
        return LlamaCppSparseEncoder(spec, tokenizer, runner, quantize)
    loaded = load_model(spec, device=device, dtype="bf16")  # half the transient memory of an fp32 load
    quantized = quantize_model(loaded.model, quantize)
    return SparseEncoder(spec, loaded, device=device, screen=screen, quantized=quantized)
