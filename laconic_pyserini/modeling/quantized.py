"""Quantised inference for decoder (LACONIC) encoders: fewer bytes per weight for batch-1 queries.

A batch-1 query of ~20 tokens reads every weight once and does 40 FLOPs per weight (~50 GFLOP for LACONIC-1B). On
one AMX core a 16-layer chain of the 1B body's products took 198 ms in bf16 (9.8 GB/s of weights, 196 GFLOP/s)
and 110 ms in prepacked int8 (9.0 GB/s, 355 GFLOP/s), where a plain 1 GiB read runs at 12-14 GB/s (idle) and the
kernels' rates on cache-resident weights are ~280 (bf16) and ~690 (int8) GFLOP/s: at M=20 the bytes and the
arithmetic bound a query about equally, and a kernel must be fast at M=20 for fewer bytes to pay
(``torch._int_mm`` re-packs per call: 184 ms; torch's 4-bit weight-only kernel runs ~45-90 GFLOP/s).
``bench_decoder.py gemm`` and the ``queries`` floors measure both bounds. ``quantize_model`` swaps a loaded
decoder's ``nn.Linear`` layers (the LM head included) and its input embeddings for modules that hold the weights
in fewer bits, with torch's own CPU kernels (no new dependency):

- ``int8``: per-output-channel symmetric int8 weights packed once for oneDNN's int8 GEMM (AMX-int8 / VNNI where
  the CPU has them), activations quantised per token on the fly; the rest of the model (norms, attention scores)
  runs in fp32;
- ``int4``: grouped asymmetric 4-bit weights (``_weight_int4pack_mm_for_cpu``, bf16 activations), the LM head in
  int8 as above (the 4-bit kernel is slower than the int8 one on the vocabulary projection).

Only the arithmetic changes: tokenisation, bidirectional attention, prefixes, the masked max-pool, log1p(relu) and
top-k stay those of :class:`~laconic_pyserini.modeling.SparseEncoder`. Quantisation is an inference setting, not
another model: the encoder fingerprint (:mod:`laconic_pyserini.fingerprint`) stays that of the weights on disk.
"""

from __future__ import annotations

import logging

import torch

from ..spec import SpecError
from . import QUANTIZE_SCHEMES as SCHEMES
from . import int8_gemm
from .screened_head import quantize_rows

logger = logging.getLogger(__name__)

#: The dtype of the activations (and of the layers left unquantised) per scheme.
ACTIVATION_DTYPE = {"int8": torch.float32, "int4": torch.bfloat16,
                    # llama.cpp (:mod:`.llamacpp`): fp32 between its products
                    "q8_0": torch.float32, "q4_0": torch.float32}
INT4_GROUP_SIZES = (128, 64, 32)


def check_scheme(scheme: str, kind: str, *, device: str = "cpu", dtype: str = "auto") -> str:
    """The dtype a quantised encoder runs its activations in (``dtype`` itself for ``none``); refuses
    (:class:`~laconic_pyserini.spec.SpecError`) what this toolkit does not run: only decoders, on CPU."""
    if scheme not in SCHEMES:
        raise SpecError(f"--quantize {scheme!r} is not one of {', '.join(SCHEMES)}")
    if scheme == "none":
        return dtype
    if kind != "decoder":
        raise SpecError(f"--quantize {scheme} is for decoder (LACONIC) encoders; this encoder is {kind}: "
                         "leave --quantize out (or use --quantize none)")
    if str(device) != "cpu":
        raise SpecError(f"--quantize {scheme} runs CPU int kernels; use --device cpu or leave --quantize out")
    if dtype not in ("auto", _dtype_name(ACTIVATION_DTYPE[scheme])):
        raise SpecError(f"--quantize {scheme} runs its activations in {_dtype_name(ACTIVATION_DTYPE[scheme])}; "
                         f"leave --dtype out (auto) rather than --dtype {dtype}")
    return _dtype_name(ACTIVATION_DTYPE[scheme])


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]


class Int8Linear(torch.nn.Module):
    """``y = x Wᵀ + b`` with W in per-output-channel int8 and each token's activations quantised to int8 per call
    (its own scale: the outlier features of LLM hidden states would swamp one scale per tensor).

    The product is the faster exact int8 GEMM on this CPU for this layer's shape (:mod:`.int8_gemm`: oneDNN's
    linear on a weight packed once at load, or ``torch._int_mm``, timed once per process and shape). Per-token
    scales are kept exactly: the GEMM gets the integer tokens with scale 1 and the weight's per-channel scales,
    and each output row is multiplied by its token's scale after."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.gemm = int8_gemm.chosen(self.in_features, self.out_features)
        qweight, scale = quantize_rows(weight.detach().float(), self.gemm.levels)
        # Only the packed copy is kept (the plain int8 weight would double the resident set).
        self.register_buffer("qweight", int8_gemm.pack(self.gemm.kernel, qweight), persistent=False)
        # Plain attributes, not buffers: ``model.to(bf16)`` (the int4 scheme) must not round them; the kernel
        # takes fp32 scales, and a bf16 scale would put a systematic error of up to 0.4 % on each channel.
        self.scale = scale
        self.bias = None if bias is None else bias.detach().float()

    @property
    def weight(self) -> torch.Tensor:
        """A meta tensor of the weight's shape (the packed layout is the kernel's own; no transient copy)."""
        return torch.empty(self.out_features, self.in_features, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        token_scale = (flat.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12)
        quantized = torch.round(flat / token_scale).to(torch.int8)
        out = int8_gemm.multiply(self.gemm.kernel, quantized, self.qweight, self.scale) * token_scale
        if self.bias is not None:
            out += self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


class Int4Linear(torch.nn.Module):
    """``y = x Wᵀ + b`` with W in 4-bit groups along the input (asymmetric, one scale and zero per group)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        group = next((g for g in INT4_GROUP_SIZES if self.in_features % g == 0), None)
        if group is None:
            raise ValueError(f"int4 needs an input width divisible by 32, not {self.in_features}")
        self.group_size = group
        w = weight.detach().float().reshape(self.out_features, -1, group)
        low, high = w.amin(dim=-1), w.amax(dim=-1)
        scale = ((high - low) / 15.0).clamp(min=1e-8)
        q = torch.round((w - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
        self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(
            q.reshape(self.out_features, self.in_features), 1), persistent=False)
        # The kernel computes (q − 8)·scale + zero: its zero is the group minimum shifted by 8 steps.
        self.register_buffer("scales_zeros", torch.stack([scale, low + 8 * scale], dim=-1).transpose(0, 1)
                             .contiguous().to(torch.bfloat16), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16), persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """A meta tensor of the weight's shape (the packed layout is the kernel's own)."""
        return torch.empty(self.out_features, self.in_features, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scales_zeros)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


class Int8Embedding(torch.nn.Module):
    """An embedding table in per-row int8: a looked-up row is within half a step of the original."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        table, self.scale = quantize_rows(weight.detach().float(), 127)  # fp32 scales whatever ``model.to`` does
        self.register_buffer("table", table, persistent=False)
        self.dtype = dtype
        self.num_embeddings, self.embedding_dim = weight.shape

    @property
    def weight(self) -> torch.Tensor:
        return self.table.float() * self.scale[:, None]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.table[ids].float() * self.scale[ids, None]).to(self.dtype)


def quantize_model(model: torch.nn.Module, scheme: str) -> dict:
    """Quantise a loaded ``*ForCausalLM`` in place (its body, its LM head, its input embeddings); returns what
    each part now runs, for the encoder's ``kernels`` record."""
    if scheme not in ("int8", "int4"):
        raise ValueError(f"scheme must be int8 or int4, not {scheme!r}")
    activation = ACTIVATION_DTYPE[scheme]
    head = model.get_output_embeddings()
    embeddings = model.get_input_embeddings()
    with torch.no_grad():
        # The input embeddings first: with tied weights the head's replacement would otherwise drop the table.
        model.set_input_embeddings(Int8Embedding(embeddings.weight, activation))
        model.set_output_embeddings(Int8Linear(head.weight, head.bias))
        body = Int8Linear if scheme == "int8" else Int4Linear
        for parent in list(model.get_decoder().modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(parent, name, body(child.weight, child.bias))
        model.to(activation)
    model.config.tie_word_embeddings = False  # nothing left to tie: transformers must not re-tie on a later call
    _return_freed_memory()
    gemms = {f"{m.out_features}x{m.in_features}": m.gemm for m in model.modules() if isinstance(m, Int8Linear)}
    return {"quantize": scheme, "body": f"{scheme}-{'dynamic' if scheme == 'int8' else 'weight-only'}",
            "lm_head": "int8-dynamic", "embeddings": "int8", "activations": _dtype_name(activation),
            "int8_gemm": ", ".join(sorted({gemm.label for gemm in gemms.values()})),
            "int8_gemm_rates": {shape: gemm.rates for shape, gemm in gemms.items()}}


def _return_freed_memory() -> None:
    """Hand the freed full-precision weights back to the OS: glibc keeps freed small blocks in its heap, which
    would otherwise stay in the resident set the quantisation was meant to shrink."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim this way


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights a batch-1 forward reads, for the bandwidth floor: parameters and packed int weights
    (an embedding lookup reads the query's rows only, so an input table counts only where it is also multiplied:
    tied to the LM head; int8 tables never)."""
    looked_up = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
                 for p in m.parameters(recurse=False)}
    multiplied = {id(p) for m in model.modules() if not isinstance(m, torch.nn.Embedding)
                  for p in m.parameters(recurse=False)}
    total = sum(p.numel() * p.element_size() for p in model.parameters()
                if id(p) not in looked_up or id(p) in multiplied)
    for module in model.modules():
        if isinstance(module, (Int8Linear, Int4Linear)):
            extra = [module.scale] if isinstance(module, Int8Linear) else []
            total += sum(b.numel() * b.element_size() for b in [*module.buffers(recurse=False), *extra])
    return total
