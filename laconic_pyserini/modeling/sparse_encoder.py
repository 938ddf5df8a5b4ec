"""Texts → sparse term-weight dicts, for LACONIC-style decoders and SPLADE-style MLMs behind one interface."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..spec import EncoderSpec
from .loading import LoadedModel, load_model
from .screened_head import ScreenedHead, split_head
from .tokenization import SpecTokenizer
from .sparse_head import DEFAULT_CHUNK_BYTES, activate, keep_top_k, lm_head_function, sparse_pool

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


class SparseEncoder:
    """Encodes queries and documents into ``{term: weight}`` dicts following ``spec``.

    Weights are post-activation (log1p(relu) of the max-pooled logits), top-k applied when the spec asks for it;
    terms are raw vocabulary strings (``Ġheart`` for Llama-3, ``heart`` / ``##ing`` for BERT wordpieces).
    With ``screen`` (the default), an fp32 model's vocabulary projection is screened in bf16 and only the terms that
    can survive activation and top-k are computed in fp32 (:mod:`.screened_head`); ``screen=False`` computes every
    logit in the model's dtype.
    """

    def __init__(self, spec: EncoderSpec, loaded: LoadedModel, *, device: str = "cpu",
                 budget_bytes: int = DEFAULT_CHUNK_BYTES, screen: bool = True) -> None:
        self.spec = spec
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = torch.device(device)
        self.budget_bytes = budget_bytes
        if spec.kind == "decoder":
            self._body = self.model.get_decoder()
            self._head = lm_head_function(self.model)
        else:
            self._body = getattr(self.model, self.model.base_model_prefix)
            self._head = mlm_head_function(self.model)
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.tokenization = SpecTokenizer(spec, self.tokenizer, self.vocab_size)
        # Logit rows past the tokenizer's vocabulary (padded embedding matrices) have no term string.
        terms = self.tokenizer.convert_ids_to_tokens(list(range(min(self.vocab_size, len(self.tokenizer)))))
        self.terms: list[str | None] = terms + [None] * (self.vocab_size - len(terms))
        split = split_head(self.model, spec.kind) if screen else None
        self._screened = ScreenedHead(split, budget_bytes=budget_bytes) \
            if split is not None and split.weight.dtype == torch.float32 else None

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
        hidden = self._body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state \
            if self.spec.kind == "decoder" else \
            self._body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self._screened is not None:
            offset = self.spec.logit_offset
            weights = activate(self._screened(hidden, attention_mask, top_k, offset), self.spec.activation,
                               offset)
        else:
            weights = sparse_pool(hidden, attention_mask, self._head, self.vocab_size, activation=self.spec.activation,
                                  offset=self.spec.logit_offset, budget_bytes=self.budget_bytes)
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


def load_sparse_encoder(spec: EncoderSpec, *, device: str = "cpu", dtype: str = "fp32",
                        screen: bool = True) -> SparseEncoder:
    """A :class:`SparseEncoder` for a decoder or mlm spec (see :func:`laconic_pyserini.modeling.loading.load_model`)."""
    return SparseEncoder(spec, load_model(spec, device=device, dtype=dtype), device=device, screen=screen)
