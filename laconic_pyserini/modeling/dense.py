"""Dense text encoders: one vector per text, for faiss.

Two families behind one class, :class:`DenseEncoder`, both driven by an :class:`~laconic_pyserini.spec.EncoderSpec`
of kind ``dense``:

- encoder-only (BERT-style) models such as sentence-transformers' all-MiniLM-L6-v2: special tokens as trained,
  the model's own pooling (``mean`` / ``cls``), L2 normalisation when its ``modules.json`` ends in ``Normalize``,
  its own ``max_seq_length``. This re-implements what ``SentenceTransformer.encode`` does for such a folder, so
  the faiss index needs no sentence-transformers at serving time; ``tests/test_dense.py`` checks parity.
- decoder backbones (``*ForCausalLM`` by config, or a GGUF file): the "equivalent dense model" of the LACONIC
  paper. Same input contract as LACONIC (prefixes, no special tokens, bidirectional attention), but the last hidden
  states are mean- or last-token-pooled instead of max-pooling the LM head.

Outputs are float32 numpy arrays of shape ``(n, dimension)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..spec import EncoderSpec, SpecError, detect_kind, resolve_model_location

logger = logging.getLogger(__name__)

DTYPES = ("auto", "fp32", "bf16", "fp16")


def is_decoder_backbone(spec: EncoderSpec) -> bool:
    """Whether a dense spec's model is a decoder (by what its folder holds, never by its name)."""
    location = Path(resolve_model_location(spec.model))
    if not location.is_dir():
        return True  # a GGUF file
    return detect_kind(location)[0] == "decoder"


def resolve_dense_dtype(spec: EncoderSpec, dtype: str, device: str = "cpu") -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``dtype`` (``auto``: bf16 only for a decoder backbone where bf16 is fast,
    see :func:`.cpu.resolve_dtype`; encoder-only models such as MiniLM stay fp32, which keeps their MTEB scores;
    ``fp16`` is for GPUs and refused on a CPU, as for the sparse encoders)."""
    from .cpu import resolve_dtype

    decoder = dtype != "fp32" and is_decoder_backbone(spec)
    return resolve_dtype(dtype, decoder=decoder, device=device)


class DenseEncoder:
    """Encode queries and documents of one :class:`EncoderSpec` (kind ``dense``) into float32 vectors."""

    def __init__(self, spec: EncoderSpec, *, device: str = "cpu", dtype: str = "auto", batch_size: int = 32) -> None:
        import torch

        if spec.kind != "dense":
            raise SpecError(f"encoder {spec.name!r} is a {spec.kind} (sparse) encoder; a dense index needs a spec "
                            "of kind dense (e.g. --encoder minilm)")
        if spec.pooling not in ("mean", "last", "cls"):
            raise SpecError(f"encoder {spec.name!r}: dense pooling must be mean, last or cls, not {spec.pooling!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        self.spec = spec
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.dtype = resolve_dense_dtype(spec, dtype, device)
        self.model, self.tokenizer, self.is_decoder = _load(spec, self.dtype)
        self.model.to(self.device).eval()
        # Right padding keeps "last non-padding position" a simple count, for any tokenizer default.
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.dimension = int(self.model.config.hidden_size)

    @property
    def kernels(self) -> dict:
        """The dtype this encoder runs in and the CPU decision behind it (JSON, for manifests)."""
        from .cpu import kernel_decision

        return {"dtype": self.dtype, "device": str(self.device), "cpu": kernel_decision().to_dict()}

    # ------------------------------------------------------------------------------------------- public

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_texts([self.spec.query_text(t) for t in texts])

    def encode_documents(self, docs: Sequence[tuple[str, str]], *, as_query: bool = False,
                         done: Callable[[int], None] | None = None) -> np.ndarray:
        """``docs`` are ``(title, text)`` pairs, made into texts by the spec (``passage: {title} {text}``...)."""
        return self.encode_texts([self.spec.document_text(title, text, as_query=as_query) for title, text in docs],
                                 done=done)

    def encode_texts(self, texts: Sequence[str], *, done: Callable[[int], None] | None = None) -> np.ndarray:
        """Encode final texts (prefixes already applied), ``batch_size`` at a time, longest first so that each
        batch pads little; rows come back in input order. ``done`` hears each batch's size (a progress bar)."""
        import torch

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        # sentence-transformers strips surrounding whitespace before tokenising; so do we (parity).
        texts = [t.strip() for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                out[rows] = self._encode_batch([texts[i] for i in rows])
                if done is not None:
                    done(len(rows))
        return out

    # ------------------------------------------------------------------------------------------- internals

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.spec.max_length,
                               add_special_tokens=self.spec.add_special_tokens, return_tensors="pt")
        mask = batch["attention_mask"].to(self.device)
        hidden = self.model(input_ids=batch["input_ids"].to(self.device), attention_mask=mask).last_hidden_state
        hidden = hidden.float()
        if self.spec.pooling == "mean":
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        elif self.spec.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # last non-padding position (right padding)
            last = (mask.sum(1) - 1).clamp(min=0)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        if self.spec.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled.cpu().numpy()


def _load(spec: EncoderSpec, dtype: str):
    """(base model returning last_hidden_state, tokenizer, is_decoder)."""
    location = Path(resolve_model_location(spec.model))
    if not location.exists():
        raise SpecError(f"encoder {spec.name!r}: model {spec.model!r} is neither a local folder nor found under "
                        "$LACONIC_MODELS; download it or point --encoder at a local folder")
    # The family comes from what the folder holds (config architectures, GGUF header), never from its name.
    kind, _ = detect_kind(location) if location.is_dir() else ("decoder", None)
    if kind == "decoder":
        return (*_load_decoder(spec, dtype), True)
    from transformers import AutoModel, AutoTokenizer

    from .loading import torch_dtype

    tokenizer_location = resolve_model_location(spec.tokenizer) if spec.tokenizer else str(location)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_location, trust_remote_code=False)
    model = AutoModel.from_pretrained(str(location), dtype=torch_dtype(dtype), use_safetensors=True,
                                      trust_remote_code=False)
    return model, tokenizer, False


def _load_decoder(spec: EncoderSpec, dtype: str):
    """A decoder backbone loaded exactly as the sparse (LACONIC) encoder loads it -- GGUF, LoRA, separate tokenizer,
    bidirectional switch -- but read below the LM head: dense pooling reads the last hidden states."""
    from .loading import load_checkpoint

    loaded = load_checkpoint(spec, "decoder", dtype=dtype)
    return loaded.model.get_decoder(), loaded.tokenizer
