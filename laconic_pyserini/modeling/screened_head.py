"""Exact max-pooled logits for the terms that can matter, found by a cheap screen and re-scored in fp32.

The vocabulary projection is nearly all of a SPLADE encoder's compute (88 % for splade-tiny: 8,192 positions ×
128 × 30,522 per batch), and an fp32 model spends it on logits that end up as zero: only the positive pooled logits
survive ``log1p(relu)``, and only the top-k of those survive the cut. So the projection is first computed cheaply,
with a rigorous bound on each approximate pooled logit's error, in one of two precisions:

- **int8** (``precision="int8"``): each sequence's hidden states quantised with one scale (8 bits), each
  vocabulary row with its own (7 bits), multiplied exactly in int32 (``torch._int_mm``: VNNI / AMX-int8, and
  ``vpmaddubsw`` on AVX2, about twice the fp32 rate there). With ``ĥ``, ``ŵ`` the dequantised vectors and
  ``e = x − x̂``, ``h·w = ĥ·ŵ + e_h·w + ĥ·e_w``, so

      |ĥ·ŵ − h·w| ≤ ‖e_h‖·‖w‖ + ‖ĥ‖·‖e_w‖   (Cauchy–Schwarz; the int32 sum itself is exact)

  plus fp32 rounding margins (:func:`int8_slack`). Weights keep 7 bits because AVX2's and AVX-512BW's int8
  kernels add pairs of u8×s8 products in saturating int16 (``vpmaddubsw``): with |w| ≤ 63 no pair can saturate
  (255 · 63 · 2 < 2¹⁵), and :func:`.cpu.int8_exact` checks the product against int64 before int8 is used.
- **bf16**: the projection in bf16 (about twice the fp32 rate on CPUs with bf16 dot-product instructions, half
  the memory traffic), with

      |bf16(h)·bf16(w) − h·w| ≤ c · ‖h‖ · ‖w‖,   c = 2·(3u + 4u² + (K + 2)·2⁻²³),  u = 2⁻⁸ (bf16 unit round-off)

  — the inputs' rounding (2u + u²), the bf16 output's rounding (u, times the growth of the inputs), an fp32
  accumulation over K = hidden size, and a factor 2 of margin.

The maximum over positions moves by at most the largest error. A term is a *candidate* when its upper bound is
above the spec's ``logit_offset`` (0 unless set) and reaches the k-th largest lower bound of its row: every term of
the exact top-k with a positive weight is then a candidate. Candidates are re-scored exactly (fp32, only their
columns, only the row's real tokens), and every other term is set to −inf (weight 0). With ties and rounding
aside, the output equals the fp32 max-pool on every term that survives activation and top-k;
``tests/test_modeling.py`` and ``tests/test_cpu_dispatch.py`` check it term for term on real SciFact documents
(splade-tiny) and on a random Llama.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .sparse_head import DEFAULT_BLOCK_BYTES, sequence_max_pool, vocab_columns

BF16_UNIT_ROUNDOFF = 2.0 ** -8
PRECISIONS = ("int8", "bf16")
#: Quantisation levels: hidden states use all of int8, vocabulary rows 7 bits (see the module docstring).
INT8_HIDDEN_LEVELS = 127
INT8_WEIGHT_LEVELS = 63


def error_factor(hidden_size: int) -> float:
    """``c`` of the module docstring: a bound on |bf16 dot − fp32 dot| per unit of ‖h‖·‖w‖, with a margin of 2."""
    u = BF16_UNIT_ROUNDOFF
    return 2.0 * (3 * u + 4 * u * u + (hidden_size + 2) * 2.0 ** -23)


def int8_slack(hidden_residual: torch.Tensor, hidden_norm: torch.Tensor, approx_norm: torch.Tensor,
               weight_norms: torch.Tensor, weight_residuals: torch.Tensor, approx: torch.Tensor,
               hidden_size: int) -> torch.Tensor:
    """The int8 screen's error bound per term: ``‖e_h‖·‖w‖ + ‖ĥ‖·‖e_w‖`` (max over the sequence's tokens) with a
    2⁻¹⁰ relative margin for the fp32 norms, plus the fp32 reference's own dot-product rounding (2·(K + 2)·2⁻²⁴ ·
    ‖h‖·‖w‖, a factor 2 of margin) and the dequantisation's roundings (2⁻²⁰ of the approximate logit)."""
    slack = (hidden_residual * weight_norms + approx_norm * weight_residuals) * (1 + 2.0 ** -10)
    slack += (2 * (hidden_size + 2) * 2.0 ** -24) * hidden_norm * weight_norms
    return slack + approx.abs() * 2.0 ** -20


def int8_block_max(tokens: torch.Tensor, weight: torch.Tensor, out: torch.Tensor,
                   block_bytes: int = DEFAULT_BLOCK_BYTES) -> torch.Tensor:
    """``out[v] = max_t tokens[t] · weight[v]`` in exact int32 for int8 ``tokens`` (T×K) and ``weight`` (V×K), a
    cache-sized block of vocabulary columns at a time (as :func:`.sparse_head.sequence_max_pool`)."""
    vocab = weight.shape[0]
    columns = vocab_columns(tokens.shape[0], vocab, 4, block_bytes)
    for start in range(0, vocab, columns):
        stop = min(start + columns, vocab)
        torch.amax(torch._int_mm(tokens, weight[start:stop].T), dim=0, out=out[start:stop])
    return out


def quantize_rows(matrix: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 quantisation to ``±levels``: (int8 matrix, fp32 scale per row)."""
    scale = matrix.abs().amax(dim=1) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(matrix / scale[:, None]).clamp(-levels, levels).to(torch.int8), scale


@dataclass(frozen=True)
class LinearHead:
    """A head split as ``transform`` (per position, cheap) followed by ``hidden @ weight.T + bias``."""

    transform: Callable[[torch.Tensor], torch.Tensor] | None
    weight: torch.Tensor
    bias: torch.Tensor | None


def split_head(model, kind: str) -> LinearHead | None:
    """The decoder's LM head, or a BERT MLM head, split for screening; ``None`` for heads not supported here."""
    if kind == "decoder":
        head = model.get_output_embeddings()
        if isinstance(head, torch.nn.Linear):
            return LinearHead(None, head.weight, head.bias)
        return None
    if getattr(model.config, "model_type", None) == "bert":
        predictions = model.cls.predictions
        if isinstance(predictions.decoder, torch.nn.Linear):
            return LinearHead(predictions.transform, predictions.decoder.weight, predictions.decoder.bias)
    return None


class ScreenedHead:
    """Holds the screen's copy of the projection and its row norms; call it like ``max_pool_logits`` (inference
    only). ``precision``: ``"bf16"`` or ``"int8"`` (CPU only; see the module docstring)."""

    def __init__(self, head: LinearHead, *, precision: str = "bf16", block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        if head.weight.dtype != torch.float32:
            raise ValueError("screening is for fp32 heads; a bf16 model's projection is already bf16")
        if precision not in PRECISIONS:
            raise ValueError(f"screen precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.head = head
        self.precision = precision
        self.block_bytes = block_bytes
        weight = head.weight.detach()
        self.device = weight.device
        self.weight_norms = weight.norm(dim=1)
        self.bias = None if head.bias is None else head.bias.detach().float()
        self.factor = error_factor(weight.shape[1])
        if precision == "int8":
            self.weight_q, scale = quantize_rows(weight, INT8_WEIGHT_LEVELS)
            self.weight_scale = scale
            self.weight_residuals = (weight - self.weight_q.float() * scale[:, None]).norm(dim=1)
        else:
            self.weight_bf16 = weight.to(torch.bfloat16)

    def _bf16_row(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # bf16 maxima of bf16 products, a cache-sized block of columns at a time (sparse_head.vocab_columns)
        vocab = self.weight_bf16.shape[0]
        pooled = sequence_max_pool(tokens.to(torch.bfloat16), self.weight_bf16, None,
                                   tokens.new_empty(vocab, dtype=torch.bfloat16), self.block_bytes)
        return pooled.float(), (tokens.norm(dim=1).amax() * self.factor) * self.weight_norms

    def _int8_row(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = tokens.abs().amax() / INT8_HIDDEN_LEVELS
        scale = scale if float(scale) > 0 else torch.ones_like(scale)
        quantized = torch.round(tokens / scale).clamp(-INT8_HIDDEN_LEVELS, INT8_HIDDEN_LEVELS).to(torch.int8)
        dequantized = quantized.float() * scale
        maxima = int8_block_max(quantized, self.weight_q, torch.empty(self.weight_q.shape[0], dtype=torch.int32),
                                self.block_bytes)
        approx = maxima.float() * (scale * self.weight_scale)
        slack = int8_slack((tokens - dequantized).norm(dim=1).amax(), tokens.norm(dim=1).amax(),
                           dequantized.norm(dim=1).amax(), self.weight_norms, self.weight_residuals, approx,
                           tokens.shape[1])
        return approx, slack

    @torch.inference_mode()
    def screen(self, hidden: torch.Tensor, attention_mask: torch.Tensor
               ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Each row's real-token fp32 hidden states (after the head's transform), the B×V approximate pooled
        logits (−inf for a row without tokens) and the B×V bound on their error."""
        keep = attention_mask.bool()
        if self.head.transform is not None:
            hidden = self.head.transform(hidden)
        hidden = hidden.float()
        batch, vocab = hidden.shape[0], self.weight_norms.shape[0]
        # One sequence at a time, real tokens only: no padding is projected, and each block of a row's logits is
        # reduced while in cache (9.2 → 6.0 ms per SciFact document with AVX512_BF16, one thread).
        tokens = [hidden[row][keep[row]] for row in range(batch)]
        approx = hidden.new_full((batch, vocab), float("-inf"))
        slack = hidden.new_zeros((batch, vocab))
        row_screen = self._int8_row if self.precision == "int8" else self._bf16_row
        for row, rows_tokens in enumerate(tokens):
            if rows_tokens.shape[0]:
                approx[row], slack[row] = row_screen(rows_tokens)
        if self.bias is not None:
            approx += self.bias
            slack += self.bias.abs() * 2.0 ** -20  # the bias addition's rounding, here and in the fp32 reference
        return tokens, approx, slack

    @torch.inference_mode()
    def __call__(self, hidden: torch.Tensor, attention_mask: torch.Tensor, top_k: int | None,
                 offset: float = 0.0) -> torch.Tensor:
        """B×V pooled logits: exact (fp32) for every candidate, −inf elsewhere (a weight of 0 after activation).

        A term can survive the activation only if its pooled logit exceeds ``offset`` (the spec's ``logit_offset``).
        """
        tokens, approx, slack = self.screen(hidden, attention_mask)
        batch, vocab = approx.shape
        upper = approx + slack
        candidate = upper > offset
        if top_k is not None and top_k < vocab:
            floor = (approx - slack).topk(top_k, dim=1).values[:, -1:]
            candidate &= upper >= floor
        pooled = torch.full_like(approx, float("-inf"))
        weight, bias = self.head.weight.detach(), self.bias
        for row, rows_tokens in enumerate(tokens):
            ids = torch.nonzero(candidate[row]).squeeze(1)
            if ids.numel() == 0 or rows_tokens.shape[0] == 0:
                continue
            exact = (rows_tokens @ weight[ids].T).amax(dim=0)
            if bias is not None:
                exact += bias[ids]
            pooled[row, ids] = exact
        return pooled
