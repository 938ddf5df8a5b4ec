"""``bench_decoder.py gemm`` and the floors of ``queries``: GEMM rates of the query encoder's kernels.

A batch-1 query of ~20 tokens multiplies a 20×K activation by every weight of the model once. Two rates bound it:

- *hot*: the same weight again and again (it stays in cache), the kernel's arithmetic rate at this M: the
  compute floor of a query is its FLOPs over the best hot rate;
- *streamed*: a ring of distinct copies of the weight, ≥ 1 GiB in all (far beyond the caches), what a forward
  through a model does: its GB/s of weights read is set by memory bandwidth when the kernel is fast enough.

Candidates: ``bf16``/``fp32`` (``F.linear``), ``int8-onednn`` (the toolkit's ``Int8Linear``: a weight packed once
for oneDNN, per-token activation scales), ``int8-int_mm`` (``torch._int_mm`` on the plain weight: packed per
call), ``int8-dynamic`` (``quantized::linear_dynamic``, per-tensor activation scale, onednn engine), ``int4``
(the toolkit's ``Int4Linear``, bf16 activations), and ONNX Runtime's blockwise ``MatMulNBits`` (``ort-int4``,
``ort-int8``: symmetric blocks of 32 weights along K with one fp32 scale each, ``accuracy_level=4``, i.e. the
activations quantised to int8 per block and an int8 product: MLAS's VNNI / AMX / AVX2 kernels), one single-node
graph per weight (needs ``onnx`` to write the graph; ``onnxruntime`` comes with pyserini).
"""

from __future__ import annotations

import time

SHAPES_1B = {"q/o 2048x2048": (2048, 2048), "k/v 512x2048": (512, 2048), "gate/up 8192x2048": (8192, 2048),
             "down 2048x8192": (2048, 8192), "lm_head 128256x2048": (128_256, 2048)}
CANDIDATES = ("bf16", "fp32", "int8-onednn", "int8-int_mm", "int8-dynamic", "int4", "ort-int4", "ort-int8")
ORT_BLOCK = 32
RING_BYTES = 2**30


def make_kernel(name: str, weight):
    """A callable ``x`` (M×K fp32) → M×N running candidate ``name`` on ``weight`` (N×K fp32); its weight bytes."""
    import torch
    import torch.nn.functional as F

    from laconic_pyserini.modeling.quantized import Int4Linear, Int8Linear, weight_bytes
    from laconic_pyserini.modeling.screened_head import quantize_rows

    if name in ("bf16", "fp32"):
        w = weight.to(torch.bfloat16 if name == "bf16" else torch.float32)
        return (lambda x: F.linear(x.to(w.dtype), w)), w.numel() * w.element_size()
    if name == "int8-onednn":
        module = Int8Linear(weight, None)
        return module, weight_bytes(_wrap(module))
    if name == "int4":
        module = Int4Linear(weight, None)
        return (lambda x: module(x.to(torch.bfloat16))), weight_bytes(_wrap(module))
    if name.startswith("ort-int"):
        return _ort_matmul_nbits(weight, int(name.removeprefix("ort-int")))
    qweight, scale = quantize_rows(weight, 127)
    if name == "int8-int_mm":
        plain = qweight.t()
        return (lambda x: torch._int_mm(_per_token_int8(x), plain).float() * scale), qweight.numel()
    if name == "int8-dynamic":
        torch.backends.quantized.engine = "onednn"
        wq = torch.quantize_per_channel(weight, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0,
                                        torch.qint8)
        packed = torch.ops.quantized.linear_prepack(wq, None)
        return (lambda x: torch.ops.quantized.linear_dynamic(x, packed, True)), qweight.numel()
    raise ValueError(f"unknown candidate {name!r}; one of {', '.join(CANDIDATES)}")


def _ort_matmul_nbits(weight, bits: int):
    """ONNX Runtime's ``com.microsoft.MatMulNBits`` on ``weight`` (N×K): symmetric ``bits``-bit blocks of
    :data:`ORT_BLOCK` along K, stored unsigned with the midpoint as zero point (the op's layout: ``B`` is
    N × blocks × block bytes, low nibble first); a callable on M×K fp32 tensors and its weight bytes."""
    import numpy as np
    import torch

    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise SystemExit(f"error: the ort-int{bits} candidate needs {exc.name}: pip install onnx onnxruntime") from exc
    n, k = weight.shape
    mid = 2 ** (bits - 1)
    blocks = weight.float().reshape(n, k // ORT_BLOCK, ORT_BLOCK)
    scale = (blocks.abs().amax(dim=-1) / (mid - 1)).clamp(min=1e-12)
    q = (torch.round(blocks / scale[..., None]).clamp(-mid, mid - 1) + mid).to(torch.uint8)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
    inputs = {"B": q.numpy(), "scales": scale.reshape(-1).numpy()}
    if bits == 8:  # the op's default zero point is the midpoint only for 4 bits
        inputs["zero_points"] = np.full((n, k // ORT_BLOCK), mid, dtype=np.uint8)
    node = onnx.helper.make_node("MatMulNBits", ["A", *inputs], ["Y"], domain="com.microsoft", K=k, N=n,
                                 bits=bits, block_size=ORT_BLOCK, accuracy_level=4)
    graph = onnx.helper.make_graph(
        [node], "matmul_nbits", [onnx.helper.make_tensor_value_info("A", onnx.TensorProto.FLOAT, ["M", k])],
        [onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, ["M", n])],
        [onnx.numpy_helper.from_array(v, name) for name, v in inputs.items()])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21),
                                                         onnx.helper.make_opsetid("com.microsoft", 1)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    # Every InferenceSession has its own thread pool, and a streamed ring holds hundreds: idle ones must sleep, not spin.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    nbytes = sum(v.nbytes for v in inputs.values())
    return (lambda x: torch.from_numpy(session.run(None, {"A": x.numpy()})[0])), nbytes


def _per_token_int8(x):
    import torch

    scale = (x.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12)
    return torch.round(x / scale).to(torch.int8)


def _wrap(module):
    import torch

    holder = torch.nn.Module()
    holder.layer = module
    return holder


def _best_seconds(fn, min_seconds: float = 0.3, min_calls: int = 3) -> float:
    fn()
    best, spent, calls = float("inf"), 0.0, 0
    while spent < min_seconds or calls < min_calls:
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent, calls = min(best, took), spent + took, calls + 1
    return best


def gemm_rates(name: str, n: int, k: int, m: int, *, streamed: bool = True) -> dict:
    """Hot (and streamed) GFLOP/s and weight GB/s of candidate ``name`` at an M×K by K×N product."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(m, k)
    kernel, nbytes = make_kernel(name, torch.randn(n, k) * 0.02)
    flops = 2.0 * m * n * k
    hot = _best_seconds(lambda: kernel(x))
    result = {"hot_gflops": flops / hot / 1e9, "hot_ms": 1000 * hot, "weight_bytes": nbytes}
    if streamed:
        ring = [kernel] + [make_kernel(name, torch.randn(n, k) * 0.02)[0]
                           for _ in range(max(1, -(-RING_BYTES // nbytes)) - 1)]
        seconds = _best_seconds(lambda: [kern(x) for kern in ring], min_calls=2) / len(ring)
        result.update(streamed_gflops=flops / seconds / 1e9, streamed_ms=1000 * seconds,
                      streamed_weight_gbs=nbytes / seconds / 1e9, ring=len(ring))
    return result


def gemm_table(candidates: list[str], m: int, threads: int, *, streamed: bool = True) -> dict:
    """Every candidate on every LACONIC-1B shape at ``m`` tokens, ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    table = {}
    for label, (n, k) in SHAPES_1B.items():
        for name in candidates:
            table[f"{label} {name}"] = {"shape": label, "kernel": name, "m": m, "threads": threads,
                                        **gemm_rates(name, n, k, m, streamed=streamed)}
    return table


def compute_peak_gflops(name: str, m: int) -> float:
    """The best hot rate of ``name`` over the body's shapes at ``m`` tokens: the compute floor's denominator."""
    return max(gemm_rates(name, n, k, m, streamed=False)["hot_gflops"]
               for label, (n, k) in SHAPES_1B.items() if not label.startswith("lm_head"))


def query_flops(config: dict, tokens: float) -> dict:
    """FLOPs of one ``tokens``-token forward, by part: ``body`` (2 per weight per token in every linear layer,
    plus the attention scores and their weighted sum, 4·T²·heads·head_dim per layer) and ``lm_head``."""
    hidden, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q_width, kv_width = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    per_layer = hidden * (2 * q_width + 2 * kv_width) + 3 * hidden * inter
    attention = layers * 4 * tokens * tokens * q_width
    return {"body": 2.0 * tokens * layers * per_layer + attention,
            "lm_head": 2.0 * tokens * config["vocab_size"] * hidden}


#: The GEMM kernel of each part of each ``--quantize`` variant (``full`` takes the full-precision dtype).
VARIANT_KERNELS = {"int8": {"body": "int8-onednn", "lm_head": "int8-onednn"},
                   "int4": {"body": "int4", "lm_head": "int8-onednn"}}


def compute_floor(config: dict, tokens: float, variant: str, full_dtype: str) -> dict:
    """The compute floor of one query: each part's FLOPs over its kernel's best hot rate at this many tokens."""
    kernels = VARIANT_KERNELS.get(variant, {"body": full_dtype, "lm_head": full_dtype})
    flops = query_flops(config, tokens)
    m = max(1, round(tokens))
    peaks = {name: compute_peak_gflops(name, m) for name in set(kernels.values())}
    seconds = sum(flops[part] / (peaks[kernels[part]] * 1e9) for part in flops)
    return {"flops": sum(flops.values()), "flops_by_part": flops, "kernels": kernels, "peak_gflops": peaks,
            "compute_floor_ms": 1000 * seconds}


def bench_gemm(args) -> dict:
    """``bench_decoder.py gemm``: the candidates' hot and streamed rates, per thread count, printed as a table."""
    rows = {}
    for threads in args.threads:
        table = gemm_table(args.kernels, args.m, threads, streamed=not args.hot_only)
        print(f"\nM={args.m}, {threads} thread(s): | shape | kernel | hot GFLOP/s | streamed GFLOP/s "
              f"| streamed weight GB/s |\n|---|---|---|---|---|")
        for r in table.values():
            nan = float("nan")
            print(f"| {r['shape']} | {r['kernel']} | {r['hot_gflops']:.0f} | {r.get('streamed_gflops', nan):.0f} "
                  f"| {r.get('streamed_weight_gbs', nan):.1f} |", flush=True)
        rows[str(threads)] = table
    return {"gemm": rows, "m": args.m}
