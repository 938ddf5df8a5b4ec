"""Which int8 GEMM the quantised layers run: the fastest of the exact candidates, timed on the layer's own shape.

Two kernels multiply int8 activations by int8 weights on a CPU:

- ``onednn``: oneDNN's int8 linear on a weight packed once at load (``onednn::qlinear_prepack``), full-range
  weights (±127) where it is exact;
- ``int_mm``: ``torch._int_mm`` on the plain weight, ±127 where that is exact and 7-bit (±63) weights where the
  CPU sums u8×s8 pairs in saturating int16 (``vpmaddubsw`` without VNNI, :func:`.cpu.int8_exact`).

Exact is not fast. Where AVX-512 VNNI comes without AMX, oneDNN's prepacked linear is exact and 100-250× slower
than fp32 (576×576 at 12 tokens: 140 ms against fp32's 1.4 ms; a 49,152-row LM head 10 s against 41 ms), while
``torch._int_mm`` runs the same head in 10 ms; with AMX the prepacked kernel is the fast one (``_int_mm`` re-packs
the weight on every call). So the candidates that are exact are timed on the shape the layer will run (a query's
tokens × its input × its output features, the output capped at :data:`PROBE_MAX_ROWS` rows so that a slow kernel
costs one call of at most a few seconds), once per process and shape, and the faster is chosen; the rates are recorded beside
the choice (:class:`Int8Gemm`, and the encoder's ``kernels`` record).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .cpu import int8_exact
from .screened_head import quantize_rows

logger = logging.getLogger(__name__)

#: Tokens per timed product: a short query's (``query: `` and a few words).
PROBE_TOKENS = 16
#: The timed weight's rows at most: a vocabulary-sized head is timed on a slice of this height.
PROBE_MAX_ROWS = 1024
CANDIDATES = ("onednn", "int_mm")

#: ``measure(kernel, levels, tokens, in_features, out_features, limit=seconds) -> GFLOP/s``; tests inject a slow
#: answer.
Measure = Callable[..., float]


@dataclass(frozen=True)
class Int8Gemm:
    """The chosen kernel, the weight range it takes, and the measured rate (GFLOP/s) of every exact candidate."""

    kernel: str
    levels: int
    rates: dict[str, float]

    @property
    def label(self) -> str:
        return f"{self.kernel}-prepacked" if self.kernel == "onednn" else f"{self.kernel}-{self.levels}-levels"


def pack(kernel: str, qweight: torch.Tensor) -> torch.Tensor:
    """The weight in the layout ``kernel`` multiplies (oneDNN's packed copy, or the transposed plain one)."""
    return torch.ops.onednn.qlinear_prepack(qweight, None) if kernel == "onednn" else qweight.t()


def multiply(kernel: str, quantized: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``quantized @ Wᵀ`` in fp32, each output column times its weight scale (token scales are the caller's)."""
    if kernel == "onednn":
        return torch.ops.onednn.qlinear_pointwise(quantized, 1.0, 0, packed, scale, None, None, 1.0, 0,
                                                  torch.float32, "none", [], "")
    return torch._int_mm(quantized, packed).float() * scale


@functools.cache
def exact_candidates() -> tuple[tuple[str, int], ...]:
    """The kernels that are exact here, each with the weight range it takes (see the module docstring)."""
    found = []
    x = torch.full((1, 4), 127, dtype=torch.int8)
    try:
        packed = pack("onednn", torch.full((8, 4), 127, dtype=torch.int8))
        out = multiply("onednn", x, packed, torch.ones(8))
        if torch.backends.mkldnn.is_available() and bool((out == 4 * 127 * 127).all()):
            found.append(("onednn", 127))
    except (AttributeError, RuntimeError):
        pass  # a torch without the oneDNN ops (not an x86 mkldnn build)
    found.append(("int_mm", 127 if int8_exact(127) else 63))
    return tuple(found)


def measure_rate(kernel: str, levels: int, tokens: int, in_features: int, out_features: int, *,
                 limit: float | None = None) -> float:
    """Best-of-3 GFLOP/s (wall time, this process's threads) of ``kernel`` on random int8 operands of the shape;
    a first call slower than ``limit`` seconds answers from that call alone (a slow kernel costs one call)."""
    generator = torch.Generator().manual_seed(0)
    qweight, scale = quantize_rows(torch.randn(out_features, in_features, generator=generator), levels)
    packed = pack(kernel, qweight)
    quantized = torch.randint(-127, 128, (tokens, in_features), generator=generator, dtype=torch.int8)
    with torch.inference_mode():
        start = time.perf_counter()
        multiply(kernel, quantized, packed, scale)  # first-call dispatch
        best = time.perf_counter() - start
        for _ in range(3 if limit is None or best <= limit else 0):
            start = time.perf_counter()
            multiply(kernel, quantized, packed, scale)
            best = min(best, time.perf_counter() - start)
    return 2 * tokens * in_features * out_features / max(best, 1e-9) / 1e9


def choose(in_features: int, out_features: int, measure: Measure = measure_rate) -> Int8Gemm:
    """The faster exact kernel for a ``out_features × in_features`` weight (one candidate: no timing)."""
    candidates = exact_candidates()
    if len(candidates) == 1:
        (kernel, levels), = candidates
        return Int8Gemm(kernel, levels, {})
    rows = min(out_features, PROBE_MAX_ROWS)
    flops = 2 * PROBE_TOKENS * in_features * rows
    rates: dict[str, float] = {}
    for kernel, levels in sorted(candidates, key=lambda candidate: candidate[0] != "int_mm"):
        # Once one kernel is timed, another need not run longer than 4× its time (plus dispatch) to lose.
        limit = 4 * flops / max(rates.values()) / 1e9 + 0.01 if rates else None
        rates[kernel] = max(measure(kernel, levels, PROBE_TOKENS, in_features, rows, limit=limit), 1e-6)
    kernel, levels = max(candidates, key=lambda candidate: rates[candidate[0]])
    chosen = Int8Gemm(kernel, levels, {name: round(rate, 2) for name, rate in rates.items()})
    logger.info("int8 GEMM for %d×%d: %s (GFLOP/s %s)", out_features, in_features, chosen.label,
                ", ".join(f"{name} {rate}" for name, rate in chosen.rates.items()))
    return chosen


@functools.cache
def chosen(in_features: int, out_features: int) -> Int8Gemm:
    """:func:`choose` with the real timing, once per process and shape."""
    return choose(in_features, out_features)
