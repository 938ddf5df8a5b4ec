"""What this CPU does fast, decided once per process; and thread counts that are set for a while, then restored.

Two choices depend on which low-precision matrix products are fast here:

- the sparse head of an fp32 model: a screen (:mod:`.screened_head`) only pays where its product runs well above
  the fp32 rate. The int8 screen (``torch._int_mm``) does on AVX2 (``vpmaddubsw``, ~2× fp32), AVX-512 VNNI and
  AMX; the bf16 screen only with AVX512_BF16 / AMX (on an AVX2-only CPU bf16 is emulated, about 5× *slower* than
  fp32). Where neither pays, the exact fp32 head (:func:`.sparse_head.exact_max_pool`) runs. Both fast: the one
  with the higher probe rate (int8 when rates are not known);
- the dtype a decoder runs in when the user did not say (``dtype="auto"``): bf16 where bf16 is fast, else fp32.
  MLM (SPLADE) and encoder-only dense models stay fp32 (they are small, and fp32 keeps their published scores).

How "fast" is decided (:func:`kernel_decision`), in order:

1. explicit ``bf16_matmul=`` / ``int8_matmul="fast"|"slow"`` arguments (an unstated one is "slow"), then the
   environment variables ``LACONIC_BF16_MATMUL`` / ``LACONIC_INT8_MATMUL`` (same values; tests and users who
   know their machine use them to skip the probe);
2. on x86, a CPU without ``avx512_bf16`` / ``amx_bf16`` / ``avx_ne_convert`` in ``/proc/cpuinfo`` is slow for sure
   (bf16 is emulated), so no probe runs;
   likewise when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below its bf16 instruction sets (``AVX2``, ``AVX512_CORE``);
3. otherwise a calibrated probe: the same ``256 × 128 × 8,192`` product (a sequence through splade-tiny's head,
   on a slice of its vocabulary) in fp32 and in bf16 on one thread, best of three each, interleaved, timed in
   process CPU seconds (so that a loaded machine's preemptions do not count); ~0.1 s where bf16 is native.
   Flags cannot see other ISA limits (``ATEN_CPU_CAPABILITY``) or a hypervisor that hides features; the probe
   does. bf16 counts as fast when it reaches :data:`BF16_FAST_RATIO` × the fp32 rate (the screen also pays for
   norms, bounds and an fp32 re-scoring, ~10 % of its time).

The answer is cached for the process (the probe runs at most once) and is a JSON-serialisable
:class:`KernelDecision` that every output manifest and benchmark JSON records.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import sys
import time
from typing import TYPE_CHECKING
from collections.abc import Iterator
from dataclasses import asdict, dataclass

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

ENV_BF16_MATMUL = "LACONIC_BF16_MATMUL"
ENV_INT8_MATMUL = "LACONIC_INT8_MATMUL"
BF16_ANSWERS = ("fast", "slow")
#: bf16 counts as fast when its measured rate is at least this many times the fp32 rate.
BF16_FAST_RATIO = 1.3
#: Tokens × hidden size × vocabulary slice of the probe (splade-tiny's head shape, cut to a few milliseconds).
PROBE_SHAPE = (256, 128, 8192)
#: /proc/cpuinfo flags that decide kernels or explain a measurement (recorded when present).
RELEVANT_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                  "avx_vnni", "avx512_bf16", "avx_ne_convert", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
                  "bf16", "sve", "asimd")
_HARDWARE_BF16 = ("avx512_bf16", "amx_bf16", "avx_ne_convert")
#: Environment variables that limit the instruction sets torch and oneDNN use (recorded when set).
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", ENV_BF16_MATMUL,
           ENV_INT8_MATMUL, "OMP_NUM_THREADS")


@dataclass(frozen=True)
class KernelDecision:
    """What the CPU offers and what the toolkit chose on it; ``to_dict()`` is what manifests record."""

    cpu_model: str
    machine: str                      # platform.machine(): x86_64, aarch64 …
    capability: str                   # torch.backends.cpu.get_cpu_capability(): AVX2, AVX512, …
    flags: tuple[str, ...]            # the RELEVANT_FLAGS this CPU reports
    isa_env: dict                     # the ISA_ENV variables that are set
    torch_threads: int
    fp32_gflops: float | None         # probe rates, GFLOP per process CPU-second (None when no probe ran)
    bf16_gflops: float | None
    bf16_matmul: str                  # "fast" or "slow"
    source: str                       # "argument", "env LACONIC_BF16_MATMUL", "cpu flags" or "probe"
    int8_gflops: float | None = None
    int8_matmul: str = "slow"         # "fast", "slow" or "inexact" (torch._int_mm missing or not exact here)
    int8_source: str = "argument"     # "argument", "env LACONIC_INT8_MATMUL", "probe" or "exactness check"

    @property
    def bf16_fast(self) -> bool:
        return self.bf16_matmul == "fast"

    @property
    def int8_fast(self) -> bool:
        return self.int8_matmul == "fast"

    @property
    def screen(self) -> str:
        """How an fp32 model's sparse head is screened on this CPU: ``"int8"``, ``"bf16"`` or ``"none"``."""
        if self.int8_fast and not (self.bf16_fast and self.int8_gflops is not None
                                   and self.bf16_gflops is not None and self.bf16_gflops > self.int8_gflops):
            return "int8"
        return "bf16" if self.bf16_fast else "none"

    @property
    def decoder_dtype(self) -> str:
        """The dtype a decoder runs in on CPU when the user did not say."""
        return "bf16" if self.bf16_fast else "fp32"

    def to_dict(self) -> dict:
        record = asdict(self)
        record["flags"] = list(self.flags)
        record.update(screen=self.screen, decoder_dtype=self.decoder_dtype)
        return record

    def summary(self) -> str:
        rates = ", ".join(f"{name} {rate:.1f}" for name, rate in (("fp32", self.fp32_gflops), ("bf16", self.bf16_gflops),
                                                                   ("int8", self.int8_gflops)) if rate is not None)
        return (f"CPU {self.cpu_model!r} ({self.machine}), torch capability {self.capability}, "
                f"flags {' '.join(self.flags) or '-'}{f', probe GFLOP/s: {rates}' if rates else ''}; "
                f"bf16 matmul {self.bf16_matmul} ({self.source}), int8 matmul {self.int8_matmul} "
                f"({self.int8_source}); sparse-head screen: {self.screen}")


@functools.cache
def cpuinfo() -> tuple[str, tuple[str, ...]]:
    """(CPU model name, the :data:`RELEVANT_FLAGS` it reports) from ``/proc/cpuinfo`` (Linux; elsewhere a best
    effort from :mod:`platform` and no flags)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model", "hardware") and model in ("", platform.machine(),
                                                                                platform.processor()):
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, tuple(flag for flag in RELEVANT_FLAGS if flag in flags)


def probe_gflops(dtype, shape: tuple[int, int, int] = PROBE_SHAPE, repeats: int = 3) -> float:
    """Best-of-``repeats`` GFLOP per process CPU-second of an ``M × K`` by ``K × N`` product in ``dtype``
    (``torch.float32``, ``torch.bfloat16`` or ``torch.int8``), taken as the sparse heads take theirs (cache-sized
    blocks of columns, each reduced by a max at once: :func:`.sparse_head.sequence_max_pool`,
    :func:`.screened_head.int8_block_max`), on the current threads (CPU time adds the threads up, which is what a
    loaded machine cannot distort)."""
    import torch

    from .screened_head import int8_block_max
    from .sparse_head import sequence_max_pool

    m, k, n = shape
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(m, k, generator=generator)
    right = torch.randn(n, k, generator=generator)
    if dtype == torch.int8:
        left, right = (x.mul(20).round().clamp(-63, 63).to(torch.int8) for x in (left, right))
        out = torch.empty(n, dtype=torch.int32)

        def product():
            int8_block_max(left, right, out)
    else:
        left, right, out = left.to(dtype), right.to(dtype), torch.empty(n, dtype=dtype)

        def product():
            sequence_max_pool(left, right, None, out)
    with torch.inference_mode():
        product()  # warm-up: first-call dispatch and packing
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            product()
            best = min(best, time.process_time() - start)
    return 2 * m * k * n / max(best, 1e-9) / 1e9


@functools.cache
def int8_exact(weight_levels: int | None = None) -> bool:
    """Whether ``torch._int_mm`` computes int8 products exactly on this CPU: worst-case operands (activations at
    ±127, weights at ±``weight_levels``, default the screen's 7-bit ±63; every sign pattern) against int64, in the
    shapes the screen uses (a long sequence, a short one, an odd block). With ±127 weights AVX2's and AVX-512BW's
    ``vpmaddubsw`` saturates its int16 pair sums (False there); VNNI and AMX do not."""
    import torch

    from .screened_head import INT8_HIDDEN_LEVELS, INT8_WEIGHT_LEVELS

    levels = INT8_WEIGHT_LEVELS if weight_levels is None else weight_levels
    generator = torch.Generator().manual_seed(0)
    for rows, columns in ((256, 520), (3, 77)):
        signs = [torch.randint(0, 2, shape, generator=generator) * 2 - 1 for shape in ((rows, 128), (columns, 128))]
        left, right = signs[0] * INT8_HIDDEN_LEVELS, signs[1] * levels
        right[0], left[0] = levels, INT8_HIDDEN_LEVELS  # one all-positive pair: the largest sums
        try:
            got = torch._int_mm(left.to(torch.int8), right.to(torch.int8).T)
        except (RuntimeError, AttributeError, NotImplementedError):
            return False
        if not torch.equal(got.long(), left.long() @ right.long().T):
            return False
    return True


def _answer(value: str, where: str) -> str:
    value = value.strip().lower()
    if value not in BF16_ANSWERS:
        raise ValueError(f"{where}={value!r}: use one of {', '.join(BF16_ANSWERS)}")
    return value


def _probe(dtypes) -> dict:
    import torch

    # One thread: CPU time then counts work, not OpenMP threads spinning while a sibling is preempted. Interleaved,
    # so that a load change on a shared machine hits every dtype alike.
    rates: dict = {name: [] for name in ("fp32", *dtypes)}
    kinds = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}
    with threads(1):
        for _ in range(2):
            for name in rates:
                rates[name].append(probe_gflops(kinds[name]))
    return {name: round(max(values), 1) for name, values in rates.items()}


def kernel_decision(bf16_matmul: str | None = None, int8_matmul: str | None = None) -> KernelDecision:
    """The process's :class:`KernelDecision` (see the module docstring); cached unless an answer is given."""
    if bf16_matmul is not None or int8_matmul is not None:
        return _decide(_answer(bf16_matmul or "slow", "bf16_matmul"), "argument",
                       int8=_int8_checked(_answer(int8_matmul or "slow", "int8_matmul"), "argument"))
    return _probed_decision(os.environ.get(ENV_BF16_MATMUL) or None, os.environ.get(ENV_INT8_MATMUL) or None)


def _int8_checked(answer: str, source: str) -> tuple[str, str]:
    if answer == "fast" and not int8_exact():
        logger.warning("int8 matmul: %s says fast, but torch._int_mm is missing or not exact on this CPU; the "
                       "int8 screen is off", source)
        return "inexact", "exactness check"
    return answer, source


@functools.cache
def _probed_decision(bf16_env: str | None, int8_env: str | None) -> KernelDecision:
    _, flags = cpuinfo()
    onednn_cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    bf16 = (_answer(bf16_env, ENV_BF16_MATMUL), f"env {ENV_BF16_MATMUL}") if bf16_env else None
    if bf16 is None and platform.machine().lower() in ("x86_64", "amd64", "i686") \
            and not set(flags) & set(_HARDWARE_BF16):
        bf16 = ("slow", "cpu flags")
    elif bf16 is None and onednn_cap and onednn_cap not in ("ALL", "DEFAULT") and "BF16" not in onednn_cap \
            and "AMX" not in onednn_cap:
        bf16 = ("slow", f"ONEDNN_MAX_CPU_ISA={onednn_cap}")
    int8 = _int8_checked(_answer(int8_env, ENV_INT8_MATMUL), f"env {ENV_INT8_MATMUL}") if int8_env else None
    if int8 is None and not int8_exact():
        int8 = ("inexact", "exactness check")
    wanted = [name for name, answer in (("bf16", bf16), ("int8", int8)) if answer is None]
    rates = _probe(wanted) if wanted else {}
    if bf16 is None:
        bf16 = ("fast" if rates["bf16"] >= BF16_FAST_RATIO * rates["fp32"] else "slow", "probe")
    if int8 is None:
        int8 = ("fast" if rates["int8"] >= BF16_FAST_RATIO * rates["fp32"] else "slow", "probe")
    decision = _decide(*bf16, int8=int8, rates=rates)
    logger.info("%s", decision.summary())
    return decision


def _decide(answer: str, source: str, *, int8: tuple[str, str] = ("slow", "argument"),
            rates: dict | None = None) -> KernelDecision:
    import torch

    model, flags = cpuinfo()
    rates = rates or {}
    return KernelDecision(cpu_model=model, machine=platform.machine(),
                          capability=str(torch.backends.cpu.get_cpu_capability()), flags=flags,
                          isa_env={k: os.environ[k] for k in ISA_ENV if k in os.environ},
                          torch_threads=torch.get_num_threads(), fp32_gflops=rates.get("fp32"),
                          bf16_gflops=rates.get("bf16"), bf16_matmul=answer, source=source,
                          int8_gflops=rates.get("int8"), int8_matmul=int8[0], int8_source=int8[1])


# ---------------------------------------------------------------------------------------------- dtype

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        logger.warning("%s", message)


def check_device(device) -> "torch.device":
    """``device`` as torch takes it; a :class:`~laconic_pyserini.errors.UsageError` for a name torch does not know
    or a CUDA device on a machine without one (checked before any model loads)."""
    import torch

    from ..errors import UsageError

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {device}: not a device name; use cpu or cuda (cuda:N)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device here; use --device cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: this toolkit runs on cpu or cuda")
    return parsed


def resolve_dtype(dtype: str, *, decoder: bool, device: str = "cpu",
                  decision: KernelDecision | None = None) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for a requested ``auto``/``fp32``/``bf16``/``fp16`` (aliases ``float32``/
    ``bfloat16``/``float16``).

    ``auto``: on CPU a decoder runs in bf16 only where bf16 matmuls are fast; on CUDA in bf16 where the GPU supports
    it; everything else (MLM, encoder-only dense models) in fp32. An explicit ``bf16`` on a CPU where bf16 is slow
    is kept, with one warning per process. ``fp16`` (the LACONIC authors' GPU encoding) is for GPUs: on a CPU it is
    refused (:class:`~laconic_pyserini.errors.UsageError`), since CPU fp16 matmuls are emulated or unsupported.
    """
    check_device(device)
    from ..errors import UsageError

    aliases = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
    dtype = aliases.get(dtype, dtype)
    if dtype not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"dtype {dtype!r} is not one of auto, fp32, bf16, fp16")
    on_cpu = str(device).split(":")[0] == "cpu"
    if dtype == "fp16":
        if on_cpu:
            raise UsageError("--dtype fp16 is for GPU encoding (--device cuda); on a CPU use --dtype fp32, bf16 or "
                             "auto (what this CPU runs fast)")
        return dtype
    if dtype == "bf16":
        if on_cpu and not (decision or kernel_decision()).bf16_fast:
            warn_once("bf16-dtype", "dtype bf16 was asked for, but bf16 matmuls are slow on this CPU (emulated, "
                                    "several times slower than fp32); --dtype auto would run fp32 here")
        return dtype
    if dtype == "fp32" or not decoder:
        return "fp32"
    if on_cpu:
        return (decision or kernel_decision()).decoder_dtype
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


# ---------------------------------------------------------------------------------------------- threads

@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads and faiss OpenMP threads, then restore both.

    faiss and torch share one OpenMP runtime, so a bare ``faiss.omp_set_num_threads(1)`` leaves every later torch
    computation of the process on one thread. ``None`` leaves the counts as they are. faiss is only touched when
    something in the process has already imported it.
    """
    if count is None:
        yield
        return
    import torch

    count = max(1, int(count))
    faiss = sys.modules.get("faiss")
    torch_before = torch.get_num_threads()
    faiss_before = faiss.omp_get_max_threads() if faiss is not None else None
    torch.set_num_threads(count)
    if faiss is not None:
        faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        if faiss is not None:
            faiss.omp_set_num_threads(faiss_before)
        torch.set_num_threads(torch_before)
