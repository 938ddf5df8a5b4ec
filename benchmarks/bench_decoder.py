"""Benchmarks of the decoder (LACONIC) encoding path; results go to docs/benchmarks.md.

    python benchmarks/bench_decoder.py memory   [--lengths 64 128 256] [--batch 16]
    python benchmarks/bench_decoder.py smollm2  [--docs 16] [--batch 8]
    python benchmarks/bench_decoder.py laconic1b [--queries 50] [--docs 32] [--batch 8]
    python benchmarks/bench_decoder.py queries --shape laconic-1b [--shape laconic-3b] \
        --quantize none int8 int4 q8_0 q4_0 [--queries 50] [--docs 16] [--batch 8] --output FILE.json
    python benchmarks/bench_decoder.py retrieval [--encoder smollm2-135m] [--docs 1000] [--queries 300] \
        --quantize bf16 int8 int4 q8_0 q4_0 --output FILE.json
    python benchmarks/bench_decoder.py gemm [--m 20] [--threads 1 2] [--hot-only] --output FILE.json

Every measured configuration runs in its own process, so a peak resident set (VmHWM, reset with
``/proc/self/clear_refs`` after the model is loaded) belongs to that configuration's encoding alone.
``chunked`` is this toolkit's encoder; ``naive`` runs the same model on the same token ids but takes the whole
B×L×V ``logits`` of the causal-LM forward, masks padding, max-pools and activates, as a straightforward
implementation would. Timings are medians; the machine is shared, so the load average is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from decoder_gemm import CANDIDATES
from laconic_pyserini.modeling import QUANTIZE_SCHEMES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SCIFACT = "scifact"
LLAMA_3_2_1B = dict(vocab_size=128_256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131_072,
                    rms_norm_eps=1e-5, rope_theta=500_000.0, tie_word_embeddings=True,
                    rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                  "original_max_position_embeddings": 8192, "rope_type": "llama3"})


# -------------------------------------------------------------------------------------------- process memory


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def rss_mib(field: str = "VmHWM") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


# -------------------------------------------------------------------------------------------- encoders


def naive_weights(encoder, texts: list[str]):
    """Full-logits reference on exactly the chunked encoder's inputs (same model object, same token ids)."""
    import torch

    input_ids, attention_mask = encoder.tokenize(texts)
    with torch.inference_mode():
        logits = encoder.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        logits = logits.masked_fill(~attention_mask.bool()[:, :, None], float("-inf"))
        weights = torch.log1p(torch.relu(logits.max(dim=1).values.float()))
        values, indices = weights.topk(encoder.spec.top_k, dim=-1)
        return torch.zeros_like(weights).scatter(-1, indices, values)


def encode(encoder, impl: str, texts: list[str]):
    return encoder.encode_weights(texts) if impl == "chunked" else naive_weights(encoder, texts)


def top_terms(encoder, weights, n: int = 20) -> list[list[str]]:
    return [[encoder.terms[i] for i in row.topk(n).indices.tolist()] for row in weights]


def scifact_docs(n: int, spec) -> list[str]:
    from laconic_pyserini.data import iter_corpus, resolve_dataset

    docs = []
    for doc in iter_corpus(resolve_dataset(SCIFACT)):
        docs.append(spec.document_text(doc.title, doc.text))
        if len(docs) == n:
            return docs
    return docs


def scifact_queries(n: int, spec) -> list[str]:
    from laconic_pyserini.data import resolve_dataset
    from laconic_pyserini.topics import load_topics

    topics = load_topics(resolve_dataset(SCIFACT), "test")
    return [spec.query_text(text) for _, text in sorted(topics.items(), key=lambda kv: int(kv[0]))[:n]]


# -------------------------------------------------------------------------------------------- workers


def worker(task: dict) -> dict:
    import torch

    from decoder_queries import SHAPES

    torch.manual_seed(0)
    if task["bench"] == "memory":
        return _memory_worker(task)
    if task["bench"] == "smollm2":
        return _smollm2_worker(task)
    if task["bench"] == "laconic1b":
        return _laconic1b_worker(task)
    if task["bench"] == "convert":  # a llama.cpp variant's GGUF, made in a process of its own before it is timed
        _random_llama_encoder(SHAPES[task["shape"]], "auto", Path(task["tmp"]), quantize=task["quantize"],
                              saved="bf16")
        return {}
    if task["bench"] in ("retrieval-index", "retrieval-queries"):
        import decoder_retrieval

        return (decoder_retrieval.index_worker if task["bench"] == "retrieval-index"
                else decoder_retrieval.query_worker)(task)
    if task["bench"] == "queries":
        from decoder_queries import query_worker

        return query_worker(task, _random_llama_encoder, scifact_queries, scifact_docs, rss_mib, reset_peak_rss)
    raise ValueError(task["bench"])


def _random_llama_encoder(config_kwargs: dict, dtype: str, tmp: Path, *, quantize: str = "none",
                          saved: str | None = None):
    """A random-weight Llama saved as safetensors (in ``saved``, default ``dtype``) and loaded through the toolkit's
    own loader, in ``dtype`` or quantised (``quantize``: :mod:`laconic_pyserini.modeling.quantized`)."""
    import torch
    import transformers

    from laconic_pyserini.modeling.sparse_encoder import load_sparse_encoder
    from laconic_pyserini.spec import load_spec, models_root

    import hashlib

    # One folder per shape and dtype, reused across the processes of one benchmark.
    saved = saved or dtype
    key = hashlib.sha1(json.dumps([config_kwargs, saved], sort_keys=True).encode()).hexdigest()[:12]
    folder = tmp / f"random-llama-{key}"
    if not (folder / "config.json").exists():
        config = transformers.LlamaConfig(**config_kwargs)
        torch_type = torch.bfloat16 if saved == "bf16" else torch.float32
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch_type)  # initialise in the target dtype: no fp32 copy of 1.2B weights
        try:
            model = transformers.LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
        model.save_pretrained(folder, safe_serialization=True)
        del model
    spec = load_spec(str(folder), tokenizer=str(models_root() / "llama3-tokenizer"))
    return load_sparse_encoder(spec, dtype=dtype, quantize=quantize)


def _memory_worker(task: dict) -> dict:
    import torch

    encoder = _random_llama_encoder(dict(vocab_size=128_256, hidden_size=256, intermediate_size=512,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         tie_word_embeddings=True), "fp32", Path(task["tmp"]))
    # Texts long enough that every row fills max_length tokens.
    long_text = " ".join(scifact_docs(40, encoder.spec))
    encoder.spec = encoder.spec.__class__(**{**encoder.spec.to_dict(), "max_length": task["length"]})
    texts = [long_text[i * 50:] for i in range(task["batch"])]
    encode(encoder, task["impl"], texts[:2])  # warm-up: allocator and kernels
    rss_before = rss_mib("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    weights = encode(encoder, task["impl"], texts)
    seconds = time.perf_counter() - start
    assert encoder.tokenize(texts)[1].sum(dim=1).min().item() == task["length"]
    return {"rss_before_mib": rss_before, "peak_mib": rss_mib(), "seconds": seconds,
            "top": top_terms(encoder, weights, 5)[:2], "threads": torch.get_num_threads()}


def _smollm2_worker(task: dict) -> dict:
    from laconic_pyserini.modeling.sparse_encoder import load_sparse_encoder
    from laconic_pyserini.spec import load_spec

    encoder = load_sparse_encoder(load_spec("smollm2-135m"), dtype=task["dtype"])
    texts = scifact_docs(task["docs"], encoder.spec)
    batch = task["batch"]
    if task["impl"] == "interleaved":
        # The same batches through both implementations, alternately: a speed ratio that load drift cannot skew.
        ratios, cpu_ratios, chunked_cpu = [], [], []
        for _ in range(task["rounds"]):
            for b in range(0, len(texts), batch):
                seconds, cpu = {}, {}
                for impl in ("chunked", "naive"):
                    start, cpu_start = time.perf_counter(), time.process_time()
                    encode(encoder, impl, texts[b:b + batch])
                    seconds[impl] = time.perf_counter() - start
                    cpu[impl] = time.process_time() - cpu_start
                ratios.append(seconds["naive"] / seconds["chunked"])
                cpu_ratios.append(cpu["naive"] / cpu["chunked"])
                chunked_cpu.append(cpu["chunked"])
        return {"naive_over_chunked_time": ratios, "naive_over_chunked_cpu": cpu_ratios,
                "chunked_cpu_seconds_per_doc": statistics.median(chunked_cpu) / batch}
    encode(encoder, task["impl"], texts[:2])
    rss_before = rss_mib("VmRSS")
    reset_peak_rss()
    times, cpu_times, tops = [], [], []
    for _ in range(task["rounds"]):
        start, cpu = time.perf_counter(), time.process_time()
        tops = []
        for b in range(0, len(texts), batch):
            tops += top_terms(encoder, encode(encoder, task["impl"], texts[b:b + batch]))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
    return {"rss_before_mib": rss_before, "peak_mib": rss_mib(), "seconds": times, "cpu_seconds": cpu_times,
            "docs_per_s": len(texts) / statistics.median(times), "top20": tops}


def _laconic1b_worker(task: dict) -> dict:
    import torch

    tmp = Path(task["tmp"])
    start = time.perf_counter()
    encoder = _random_llama_encoder(LLAMA_3_2_1B, "bf16", tmp)
    load_seconds = time.perf_counter() - start
    params = sum(p.numel() for p in encoder.model.parameters())
    queries = scifact_queries(task["queries"], encoder.spec)
    docs = scifact_docs(task["docs"], encoder.spec)
    encoder.encode_queries(["warm up"])
    rss_before = rss_mib("VmRSS")
    reset_peak_rss()
    latencies, query_cpu = [], []
    for query in queries:
        start, cpu = time.perf_counter(), time.process_time()
        encoder.encode_weights([query])
        latencies.append(time.perf_counter() - start)
        query_cpu.append(time.process_time() - cpu)
    query_peak = rss_mib()
    reset_peak_rss()
    lengths = encoder.tokenize_lengths(docs)
    start, cpu = time.perf_counter(), time.process_time()
    for b in range(0, len(docs), task["batch"]):
        encoder.encode_weights(docs[b:b + task["batch"]])
    doc_seconds = time.perf_counter() - start
    doc_cpu_seconds = time.process_time() - cpu
    ordered = sorted(latencies)
    return {"params": params, "load_seconds": load_seconds, "rss_before_mib": rss_before,
            "query_peak_mib": query_peak, "doc_peak_mib": rss_mib(),
            "query_p50_ms": 1000 * statistics.median(latencies),
            "query_p95_ms": 1000 * ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))],
            "query_tokens_mean": statistics.mean(encoder.tokenize_lengths(queries)),
            "doc_tokens_mean": statistics.mean(lengths), "docs_per_s": len(docs) / doc_seconds,
            "doc_seconds": doc_seconds, "doc_cpu_seconds": doc_cpu_seconds,
            "query_cpu_p50_ms": 1000 * statistics.median(query_cpu),
            "threads": torch.get_num_threads(), "dtype": str(encoder.model.dtype)}


# -------------------------------------------------------------------------------------------- driver


def run_worker(task: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "worker", json.dumps(task)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker {task} failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(task)
    result["loadavg_1m"] = os.getloadavg()[0]
    print(json.dumps({k: v for k, v in result.items() if k not in ("top20", "top", "top64", "top10")}), file=sys.stderr,
          flush=True)
    return result


def bench_memory(args, tmp: Path) -> dict:
    rows = []
    for length in args.lengths:
        for impl in ("chunked", "naive"):
            rows.append(run_worker({"bench": "memory", "impl": impl, "length": length, "batch": args.batch,
                                    "tmp": str(tmp)}))
    print("\n| max length | tokens | chunked peak − before (MiB) | naive peak − before (MiB) | naive / chunked |")
    print("|---|---|---|---|---|")
    for length in args.lengths:
        c, n = [next(r for r in rows if r["length"] == length and r["impl"] == impl) for impl in ("chunked", "naive")]
        dc, dn = c["peak_mib"] - c["rss_before_mib"], n["peak_mib"] - n["rss_before_mib"]
        print(f"| {length} | {args.batch}×{length} | {dc:.0f} | {dn:.0f} | {dn / max(dc, 1):.1f}× |")
    return {"rows": rows}


def bench_smollm2(args, tmp: Path) -> dict:
    rows = {}
    if args.interleaved_only:
        for dtype in ("fp32", "bf16"):
            r = run_worker({"bench": "smollm2", "impl": "interleaved", "dtype": dtype, "docs": args.docs,
                            "batch": args.batch, "rounds": args.rounds})
            print(f"{dtype} interleaved, same batches: naive / chunked wall time, median "
                  f"{statistics.median(r['naive_over_chunked_time']):.2f}; CPU time, median "
                  f"{statistics.median(r['naive_over_chunked_cpu']):.2f} over {len(r['naive_over_chunked_time'])} "
                  f"batches; chunked {r['chunked_cpu_seconds_per_doc']:.2f} CPU-s per doc")
            rows[dtype] = r
        return rows
    for dtype in ("fp32", "bf16"):
        for impl in ("chunked", "naive"):
            rows[(impl, dtype)] = run_worker({"bench": "smollm2", "impl": impl, "dtype": dtype, "docs": args.docs,
                                              "batch": args.batch, "rounds": args.rounds})
    for dtype in ("fp32", "bf16"):
        rows[("interleaved", dtype)] = run_worker({"bench": "smollm2", "impl": "interleaved", "dtype": dtype,
                                                   "docs": args.docs, "batch": args.batch, "rounds": args.rounds})
    interleaved = {dtype: rows.pop(("interleaved", dtype)) for dtype in ("fp32", "bf16")}
    print("\n| dtype | impl | docs/s (median) | peak RSS (MiB) | encode peak − before (MiB) |")
    print("|---|---|---|---|---|")
    for (impl, dtype), r in rows.items():
        print(f"| {dtype} | {impl} | {r['docs_per_s']:.2f} | {r['peak_mib']:.0f} | "
              f"{r['peak_mib'] - r['rss_before_mib']:.0f} |")
    for dtype in ("fp32", "bf16"):
        c, n = rows[("chunked", dtype)], rows[("naive", dtype)]
        same = statistics.mean(len(set(a) & set(b)) / 20 for a, b in zip(c["top20"], n["top20"]))
        print(f"{dtype}: chunked/naive speed {c['docs_per_s'] / n['docs_per_s']:.2f}×, top-20 agreement {same:.3f}")
    for dtype, r in interleaved.items():
        print(f"{dtype} interleaved, same batches: naive time / chunked time, median "
              f"{statistics.median(r['naive_over_chunked_time']):.2f} over {len(r['naive_over_chunked_time'])} batches")
    fp32, bf16 = rows[("chunked", "fp32")]["top20"], rows[("chunked", "bf16")]["top20"]
    overlaps = [len(set(a) & set(b)) / 20 for a, b in zip(fp32, bf16)]
    print(f"bf16 vs fp32 top-20 overlap: mean {statistics.mean(overlaps):.3f}, min {min(overlaps):.2f} "
          f"over {len(overlaps)} docs")
    return {"rows": [dict(r) for r in rows.values()], "interleaved": interleaved, "bf16_fp32_top20_overlap": overlaps}


def bench_laconic1b(args, tmp: Path) -> dict:
    r = run_worker({"bench": "laconic1b", "queries": args.queries, "docs": args.docs, "batch": args.batch,
                    "tmp": str(tmp)})
    print(f"\nparams {r['params'] / 1e9:.3f} B, dtype {r['dtype']}, threads {r['threads']}, "
          f"load {r['load_seconds']:.0f} s, load average {r['loadavg_1m']:.1f}")
    print(f"queries: n={args.queries}, mean {r['query_tokens_mean']:.1f} tokens, p50 {r['query_p50_ms']:.0f} ms, "
          f"p95 {r['query_p95_ms']:.0f} ms, peak RSS {r['query_peak_mib']:.0f} MiB")
    print(f"documents: n={args.docs}, batch {args.batch}, mean {r['doc_tokens_mean']:.0f} tokens, "
          f"{r['docs_per_s']:.2f} docs/s, peak RSS {r['doc_peak_mib']:.0f} MiB")
    print(f"CPU time (all threads; load-independent): query p50 {r['query_cpu_p50_ms']:.0f} CPU-ms, documents "
          f"{r['doc_cpu_seconds'] / args.docs:.2f} CPU-s per doc")
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    memory = sub.add_parser("memory")
    memory.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    memory.add_argument("--batch", type=int, default=16)
    smol = sub.add_parser("smollm2")
    smol.add_argument("--docs", type=int, default=16)
    smol.add_argument("--batch", type=int, default=8)
    smol.add_argument("--rounds", type=int, default=3)
    smol.add_argument("--interleaved-only", action="store_true",
                      help="only the same-process speed ratio (no memory, no separate processes per setting)")
    big = sub.add_parser("laconic1b")
    big.add_argument("--queries", type=int, default=50)
    big.add_argument("--docs", type=int, default=32)
    big.add_argument("--batch", type=int, default=8)
    queries = sub.add_parser("queries", help="batch-1 query latency: full precision against --quantize variants")
    queries.add_argument("--shape", action="append", choices=("laconic-1b", "laconic-3b", "laconic-8b", "tiny"),
                         help="repeatable (default: laconic-1b)")
    queries.add_argument("--quantize", nargs="+", default=list(QUANTIZE_SCHEMES), choices=QUANTIZE_SCHEMES)
    queries.add_argument("--queries", type=int, default=50)
    queries.add_argument("--docs", type=int, default=16, help="documents encoded per variant (indicative rate)")
    queries.add_argument("--batch", type=int, default=8, help="document batch")
    retrieval = sub.add_parser("retrieval", help="a real decoder end to end: quantised query encoders searching one "
                                                 "fp32 impact index of SciFact documents (decoder_retrieval)")
    retrieval.add_argument("--encoder", default="smollm2-135m")
    retrieval.add_argument("--docs", type=int, default=1000)
    retrieval.add_argument("--queries", type=int, default=300)
    retrieval.add_argument("--quantize", nargs="+", default=["bf16", *QUANTIZE_SCHEMES[1:]],
                           choices=("bf16", *QUANTIZE_SCHEMES[1:]))
    gemm = sub.add_parser("gemm", help="GEMM rates of the query kernels at the LACONIC-1B shapes (decoder_gemm)")
    gemm.add_argument("--m", type=int, default=20, help="tokens (rows of the activation)")
    gemm.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    gemm.add_argument("--kernels", nargs="+", choices=CANDIDATES, default=[k for k in CANDIDATES if "ort" not in k],
                      help="ort-int4 / ort-int8: ONNX Runtime's MatMulNBits (onnx, in the dev extras)")
    gemm.add_argument("--hot-only", action="store_true", help="skip the streamed (≥ 1 GiB ring) rates")
    for p in (memory, smol, big, queries, retrieval, gemm):
        p.add_argument("--output", type=Path, help="write the results as JSON here")
        p.add_argument("--tmp", type=Path, default=Path("/tmp/laconic-bench-decoder"))
    work = sub.add_parser("worker")
    work.add_argument("task")
    args = parser.parse_args(argv)
    if args.bench == "worker":
        print(json.dumps(worker(json.loads(args.task))))
        return
    args.tmp.mkdir(parents=True, exist_ok=True)
    # llama.cpp conversions of the random models stay beside them, not in the user's cache.
    os.environ.setdefault("LACONIC_GGUF_CACHE", str(args.tmp / "gguf"))
    print(f"$ python benchmarks/bench_decoder.py {' '.join(sys.argv[1:])}   "
          f"(load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
    from laconic_pyserini.modeling.cpu import kernel_decision

    decision = kernel_decision()
    print(decision.summary())
    if args.bench == "queries":
        from decoder_queries import bench_queries

        args.shape = args.shape or ["laconic-1b"]
        result = bench_queries(args, args.tmp, run_worker, decision)
    elif args.bench == "retrieval":
        from decoder_retrieval import bench_retrieval

        result = bench_retrieval(args, args.tmp, run_worker)
    elif args.bench == "gemm":
        from decoder_gemm import bench_gemm

        result = bench_gemm(args)
    else:
        result = {"memory": bench_memory, "smollm2": bench_smollm2, "laconic1b": bench_laconic1b}[args.bench](
            args, args.tmp)
    result = {"cpu": decision.to_dict(), **result} if isinstance(result, dict) else {"cpu": decision.to_dict(),
                                                                                     "result": result}
    if args.output:
        args.output.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
