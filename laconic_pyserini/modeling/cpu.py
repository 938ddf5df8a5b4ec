"""What this CPU does fast, decided once per process; and thread counts that are set for a while, then restored.

Two choices depend on whether bf16 matrix products are fast here:

- the sparse head of an fp32 model: the bf16 screen (:mod:`.screened_head`) only pays where a bf16 product runs
  well above the fp32 rate (AVX512_BF16 / AMX); on an AVX2-only CPU bf16 is emulated, about 5× *slower* than fp32,
  and the exact fp32 head (:func:`.sparse_head.exact_max_pool`) is the fast one;
- the dtype a decoder runs in when the user did not say (``dtype="auto"``): bf16 where bf16 is fast, else fp32.
  MLM (SPLADE) and encoder-only dense models stay fp32 (they are small, and fp32 keeps their published scores).

How "fast" is decided (:func:`kernel_decision`), in order:

1. an explicit ``bf16_matmul="fast"|"slow"`` argument, then the environment variable ``LACONIC_BF16_MATMUL``
   (same values; tests and users who know their machine use it to skip the probe);
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
from collections.abc import Iterator
from dataclasses import asdict, dataclass

logger = logging.getLogger(__name__)

ENV_BF16_MATMUL = "LACONIC_BF16_MATMUL"
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
           "OMP_NUM_THREADS")


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

    @property
    def bf16_fast(self) -> bool:
        return self.bf16_matmul == "fast"

    @property
    def screen(self) -> bool:
        """Whether an fp32 model's sparse head should be screened in bf16."""
        return self.bf16_fast

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
        rates = "" if self.fp32_gflops is None else \
            f", probe fp32 {self.fp32_gflops:.1f} / bf16 {self.bf16_gflops:.1f} GFLOP/s"
        return (f"CPU {self.cpu_model!r} ({self.machine}), torch capability {self.capability}, "
                f"flags {' '.join(self.flags) or '-'}{rates}; bf16 matmul {self.bf16_matmul} ({self.source})")


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
    """Best-of-``repeats`` GFLOP per process CPU-second of an ``M × K`` by ``K × N`` product in ``dtype``, taken
    as the sparse heads take theirs (cache-sized blocks of columns, each reduced by a max at once:
    :func:`.sparse_head.sequence_max_pool`), on the current threads (CPU time adds the threads up, which is what a
    loaded machine cannot distort)."""
    import torch

    from .sparse_head import sequence_max_pool

    m, k, n = shape
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(m, k, generator=generator).to(dtype)
    right = torch.randn(n, k, generator=generator).to(dtype)
    out = torch.empty(n, dtype=dtype)
    with torch.inference_mode():
        sequence_max_pool(left, right, None, out)  # warm-up: first-call dispatch and packing
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            sequence_max_pool(left, right, None, out)
            best = min(best, time.process_time() - start)
    return 2 * m * k * n / max(best, 1e-9) / 1e9


def _answer(value: str, where: str) -> str:
    value = value.strip().lower()
    if value not in BF16_ANSWERS:
        raise ValueError(f"{where}={value!r}: use one of {', '.join(BF16_ANSWERS)}")
    return value


def _probe() -> tuple[float, float]:
    import torch

    # One thread: CPU time then counts work, not OpenMP threads spinning while a sibling is preempted. Interleaved,
    # so that a load change on a shared machine hits both dtypes alike.
    fp32, bf16 = [], []
    with threads(1):
        for _ in range(2):
            fp32.append(probe_gflops(torch.float32))
            bf16.append(probe_gflops(torch.bfloat16))
    return max(fp32), max(bf16)


def kernel_decision(bf16_matmul: str | None = None) -> KernelDecision:
    """The process's :class:`KernelDecision` (see the module docstring); cached unless ``bf16_matmul`` is given."""
    if bf16_matmul is not None:
        return _decide(_answer(bf16_matmul, "bf16_matmul"), "argument")
    env = os.environ.get(ENV_BF16_MATMUL)
    if env:
        return _decide(_answer(env, ENV_BF16_MATMUL), f"env {ENV_BF16_MATMUL}")
    return _probed_decision()


@functools.cache
def _probed_decision() -> KernelDecision:
    _, flags = cpuinfo()
    onednn_cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if platform.machine().lower() in ("x86_64", "amd64", "i686") and not set(flags) & set(_HARDWARE_BF16):
        decision = _decide("slow", "cpu flags")
    elif onednn_cap and onednn_cap not in ("ALL", "DEFAULT") and "BF16" not in onednn_cap \
            and "AMX" not in onednn_cap:
        decision = _decide("slow", f"ONEDNN_MAX_CPU_ISA={onednn_cap}")
    else:
        fp32, bf16 = _probe()
        answer = "fast" if bf16 >= BF16_FAST_RATIO * fp32 else "slow"
        decision = _decide(answer, "probe", fp32=round(fp32, 1), bf16=round(bf16, 1))
    logger.info("%s", decision.summary())
    return decision


def _decide(answer: str, source: str, *, fp32: float | None = None, bf16: float | None = None) -> KernelDecision:
    import torch

    model, flags = cpuinfo()
    return KernelDecision(cpu_model=model, machine=platform.machine(),
                          capability=str(torch.backends.cpu.get_cpu_capability()), flags=flags,
                          isa_env={k: os.environ[k] for k in ISA_ENV if k in os.environ},
                          torch_threads=torch.get_num_threads(), fp32_gflops=fp32, bf16_gflops=bf16,
                          bf16_matmul=answer, source=source)


# ---------------------------------------------------------------------------------------------- dtype

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        logger.warning("%s", message)


def resolve_dtype(dtype: str, *, decoder: bool, device: str = "cpu",
                  decision: KernelDecision | None = None) -> str:
    """``fp32`` or ``bf16`` for a requested ``auto``/``fp32``/``bf16`` (aliases ``float32``/``bfloat16``).

    ``auto``: on CPU a decoder runs in bf16 only where bf16 matmuls are fast; on CUDA in bf16 where the GPU supports
    it; everything else (MLM, encoder-only dense models) in fp32. An explicit ``bf16`` on a CPU where bf16 is slow
    is kept, with one warning per process.
    """
    aliases = {"float32": "fp32", "bfloat16": "bf16"}
    dtype = aliases.get(dtype, dtype)
    if dtype not in ("auto", "fp32", "bf16"):
        raise ValueError(f"dtype {dtype!r} is not one of auto, fp32, bf16")
    on_cpu = str(device).split(":")[0] == "cpu"
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
