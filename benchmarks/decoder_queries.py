"""``bench_decoder.py queries``: batch-1 query latency of full-precision and quantised LACONIC-shaped encoders.

Random weights of the exact shapes (Llama-3.2-1B / 3B, Llama-3.1-8B), real SciFact test queries, batch 1; every
variant (``none`` → ``full``: the fastest full-precision dtype here, bf16 where bf16 matmuls are fast, fp32
otherwise; ``int8``; ``int4``) in its own process, all in one run. Each variant gets two floors:

- bandwidth: its weight bytes over the fastest read of memory measured here (:func:`memory_bandwidth`: a one-pass
  fp32 sum, a BLAS dot, a chain of bf16 GEMMs at 20 tokens and a copy over 1 GiB buffers, best of 5 each, the
  workers' thread count);
- compute: each part's FLOPs per query (body, LM head) over its kernel's best rate on cache-resident weights at
  the queries' mean token count (:func:`decoder_gemm.compute_floor`).

A variant's p50 can sit near neither: then its kernel is slow at this M (as ``torch._int_mm`` was: re-packing).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

# Variants run by llama.cpp (:mod:`laconic_pyserini.modeling.llamacpp`): converted once, in a process of their own,
# before the timed one loads the file.
from laconic_pyserini.modeling import LLAMA_CPP_SCHEMES as LLAMA_CPP

_ROPE_32 = {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"}
_COMMON = dict(vocab_size=128_256, max_position_embeddings=131_072, rms_norm_eps=1e-5, rope_theta=500_000.0)
SHAPES = {
    "laconic-1b": dict(_COMMON, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
                       rope_scaling=_ROPE_32),
    "laconic-3b": dict(_COMMON, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                       num_attention_heads=24, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                       rope_scaling=_ROPE_32),
    "laconic-8b": dict(_COMMON, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False,
                       rope_scaling={**_ROPE_32, "factor": 8.0}),
    # For smoke runs of the benchmark itself (the real vocabulary, a toy body).
    "tiny": dict(_COMMON, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, tie_word_embeddings=True),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def memory_bandwidth(mib: int = 1024, repeats: int = 5) -> dict:
    """GB/s of passes over buffers far larger than the caches (what a batch-1 forward does to its weights), by
    method; ``read_gbs`` is the best read (the floor must not be beaten by a kernel that reads better)."""
    import torch

    buffer = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    target = torch.empty_like(buffer)
    nbytes = buffer.numel() * 4
    # A chain of 32 MiB bf16 weights times 20 tokens, as a forward reads them: AMX kernels with their prefetching
    # can read memory faster than the plain passes (measured under load: 9.8 against 7 GB/s; idle the plain
    # passes led, 14 against 9.5), and a floor that a variant beats is no floor.
    chain = buffer.view(torch.bfloat16).view(-1, 8192, 2048)
    tokens = torch.ones(20, 2048, dtype=torch.bfloat16)
    methods = {"fp32_sum": (buffer.sum, nbytes), "blas_dot": (lambda: torch.dot(buffer, buffer), nbytes),
               "copy_read_plus_write": (lambda: target.copy_(buffer), 2 * nbytes),
               "bf16_gemm_chain": (lambda: [torch.nn.functional.linear(tokens, w) for w in chain], nbytes)}
    rates = {}
    for name, (fn, moved) in methods.items():
        fn()
        rates[name] = moved / min(_timed(fn) for _ in range(repeats)) / 1e9
    return {"by_method_gbs": rates, "read_gbs": max(v for k, v in rates.items() if not k.startswith("copy")),
            "buffer_mib": mib,
            "threads": torch.get_num_threads()}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def query_worker(task: dict, load_encoder, scifact_queries, scifact_docs, rss_mib, reset_peak_rss) -> dict:
    """One variant of one shape: load (timed), query latencies at batch 1, peak RSS, top-64 terms, doc rate."""
    import torch

    start = time.perf_counter()
    encoder = load_encoder(SHAPES[task["shape"]], task["dtype"], Path(task["tmp"]), quantize=task["quantize"],
                           saved="bf16")
    load_seconds = time.perf_counter() - start
    queries = scifact_queries(task["queries"], encoder.spec)
    for query in queries[:2]:
        encoder.encode_weights([query])  # warm-up: allocator, packed kernels
    rss_before = rss_mib("VmRSS")
    reset_peak_rss()
    latencies, cpu_times, tops = [], [], []
    for query in queries:
        start, cpu = time.perf_counter(), time.process_time()
        weights = encoder.encode_weights([query])
        latencies.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
        tops.append(weights[0].topk(64).indices.tolist())
    query_peak = rss_mib()
    docs = scifact_docs(task["docs"], encoder.spec)
    start = time.perf_counter()
    for b in range(0, len(docs), task["batch"]):
        encoder.encode_weights(docs[b:b + task["batch"]])
    doc_seconds = time.perf_counter() - start
    return {"p50_ms": 1000 * statistics.median(latencies), "p95_ms": 1000 * percentile(latencies, 0.95),
            "cpu_p50_ms": 1000 * statistics.median(cpu_times), "rss_mib": query_peak,
            "rss_before_mib": rss_before, "load_seconds": load_seconds,
            "weight_bytes": encoder.weight_bytes,
            "query_tokens_mean": statistics.mean(encoder.tokenize_lengths(queries)),
            "docs_per_s": len(docs) / doc_seconds, "doc_tokens_mean": statistics.mean(encoder.tokenize_lengths(docs)),
            "kernels": {k: v for k, v in encoder.kernels.items() if k != "cpu"},
            "threads": torch.get_num_threads(), "top64": tops, **_compute_floor(task, encoder, queries)}


def _compute_floor(task: dict, encoder, queries: list[str]) -> dict:
    from decoder_gemm import compute_floor

    if task["quantize"] in LLAMA_CPP:
        return {"compute": {"compute_floor_ms": None, "note": "llama.cpp's kernels are not timed apart"}}

    tokens = statistics.mean(encoder.tokenize_lengths(queries))
    return {"compute": compute_floor(SHAPES[task["shape"]], tokens, task["quantize"], task["full_dtype"])}


def bench_queries(args, tmp: Path, run_worker, decision) -> dict:
    """Every shape × variant in its own process; overlaps and ratios against ``full`` of the same run."""
    full_dtype = "bf16" if decision.bf16_fast else "fp32"
    memory = memory_bandwidth()
    bandwidth = memory["read_gbs"]
    print(f"read bandwidth {bandwidth:.1f} GB/s (best of 1 GiB fp32 sum / BLAS dot / bf16 GEMM chain, best of 5: "
          f"{', '.join(f'{k} {v:.1f}' for k, v in memory['by_method_gbs'].items())}); full precision: {full_dtype}")
    shapes = {}
    for shape in args.shape:
        rows = {}
        for variant in args.quantize:
            name = "full" if variant == "none" else variant
            if variant in LLAMA_CPP:
                run_worker({"bench": "convert", "shape": shape, "quantize": variant, "tmp": str(tmp)})
            rows[name] = run_worker({"bench": "queries", "shape": shape, "quantize": variant,
                                     "dtype": full_dtype if variant == "none" else "auto",
                                     "queries": args.queries, "docs": args.docs, "batch": args.batch,
                                     "full_dtype": full_dtype, "tmp": str(tmp)})
        shapes[shape] = _summarise(shape, rows, bandwidth, full_dtype)
    first = next(iter(shapes.values()))
    return {"memory_bandwidth_gbs": bandwidth, "memory_bandwidth": memory, "full_dtype": full_dtype,
            "query_latency": first["query_latency"], "shapes": shapes}


def _summarise(shape: str, rows: dict, bandwidth: float, full_dtype: str) -> dict:
    full = rows.get("full")
    table = {}
    print(f"\n{shape}: | variant | p50 ms | p95 ms | RSS MiB | top-64 overlap | × full | bandwidth floor ms "
          f"| p50/floor | compute floor ms | p50/floor | docs/s |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        floor_ms = 1000 * r["weight_bytes"] / (bandwidth * 1e9)
        entry = {k: r[k] for k in ("p50_ms", "p95_ms", "cpu_p50_ms", "rss_mib", "rss_before_mib", "load_seconds",
                                   "weight_bytes", "query_tokens_mean", "docs_per_s", "doc_tokens_mean",
                                   "kernels", "threads", "loadavg_1m")}
        entry["dtype"] = r["kernels"]["dtype"] if name != "full" else full_dtype
        entry["floor_ms"], entry["p50_over_floor"] = floor_ms, r["p50_ms"] / floor_ms
        entry["bandwidth_floor_ms"], entry["compute"] = floor_ms, r["compute"]
        compute_ms = r["compute"]["compute_floor_ms"]
        entry["compute_floor_ms"] = compute_ms
        entry["p50_over_compute_floor"] = r["p50_ms"] / compute_ms if compute_ms else None
        if full is not None:
            entry["top_terms_overlap"] = statistics.mean(
                len(set(a) & set(b)) / 64 for a, b in zip(r["top64"], full["top64"]))
            entry["speedup_vs_full"] = full["p50_ms"] / r["p50_ms"]
            entry["doc_speedup_vs_full"] = r["docs_per_s"] / full["docs_per_s"]
        table[name] = entry
        print(f"| {name} ({entry['dtype']}) | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['rss_mib']:.0f} | "
              f"{entry.get('top_terms_overlap', float('nan')):.3f} | {entry.get('speedup_vs_full', float('nan')):.2f} "
              f"| {floor_ms:.0f} | {entry['p50_over_floor']:.1f} | {compute_ms or float('nan'):.0f} | "
              f"{entry['p50_over_compute_floor'] or float('nan'):.1f} | {r['docs_per_s']:.2f} |")
    return {"query_latency": table}
