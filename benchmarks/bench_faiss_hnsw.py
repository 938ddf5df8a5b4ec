"""Flat (exact) vs HNSW faiss search over the same dense vectors: recall@10 against flat, and latency.

    python benchmarks/bench_faiss_hnsw.py --flat FLAT_INDEX_DIR --topics scifact [--split test]
        [--m 32] [--ef-construction 200] [--ef-search 16 32 64 128 256] [--rounds 3] [--output results.json]

Query vectors are encoded once with the index's own encoder (encoding is not part of what is compared here). The
HNSW index is built from the flat index's stored vectors (``rebuild_faiss_index``: no re-encoding), once per M.
Per-query search latency is single-threaded, k=10 and k=1000, each query's time the median over ``--rounds``,
systems interleaved round by round so that load from other processes hits them alike. Recall@10 is the share of the
exact top 10 that HNSW returns; nDCG@10 of each is given too, so a reader sees what the lost neighbours cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import sys
import time
from pathlib import Path

import numpy as np


def _latency(searcher, vectors: np.ndarray, k: int, rounds: int) -> dict[str, float]:
    per_query = [[] for _ in range(len(vectors))]
    for _ in range(rounds):
        for i in range(len(vectors)):
            start = time.perf_counter()
            searcher.search_vectors(vectors[i:i + 1], k, threads=1)
            per_query[i].append(time.perf_counter() - start)
    ms = np.array([statistics.median(t) for t in per_query]) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flat", required=True, help="flat faiss index folder (python -m laconic_pyserini.encode.dense)")
    parser.add_argument("--topics", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output")
    args = parser.parse_args()

    from laconic_pyserini.topics import load_qrels, load_topics
    from laconic_pyserini.index.faiss import rebuild_faiss_index
    from laconic_pyserini.eval import evaluate
    from laconic_pyserini.modeling.cpu import kernel_decision, threads
    from laconic_pyserini.searchers.faiss import FaissSearcher

    decision = kernel_decision()
    print(decision.summary(), file=sys.stderr)
    with threads(1):  # one query thread, as served (restored afterwards)
        topics = load_topics(args.topics, args.split)
        qrels = load_qrels(args.topics, args.split)
        qids = list(topics)
        flat = FaissSearcher(args.flat)
        vectors = flat.encode_queries([topics[q] for q in qids])
        exact = flat.search_vectors(vectors, 10)
        results = {"flat_index": args.flat, "queries": len(qids), "documents": flat.index.ntotal,
                   "dimension": flat.index.d, "rounds": args.rounds, "M": args.m,
                   "ef_construction": args.ef_construction, "cpu": decision.to_dict(), "settings": []}
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            hnsw_dir = rebuild_faiss_index(args.flat, Path(tmp) / "hnsw", "hnsw", hnsw_m=args.m,
                                           ef_construction=args.ef_construction)
            results["hnsw_build_seconds"] = round(time.perf_counter() - start, 2)
            results["flat_bytes"] = (Path(args.flat) / "index").stat().st_size
            results["hnsw_bytes"] = (hnsw_dir / "index").stat().st_size
            searchers = {"flat": flat}
            for ef in args.ef_search:
                searchers[f"hnsw ef_search={ef}"] = FaissSearcher(hnsw_dir, ef_search=ef)
            for name, searcher in searchers.items():
                top10 = searcher.search_vectors(vectors, 10)
                run = dict(zip(qids, searcher.search_vectors(vectors, 1000)))
                recall = np.mean([len({d for d, _ in a} & {d for d, _ in b}) / len(a)
                                  for a, b in zip(exact, top10) if a])
                row = {"system": name, "recall@10_vs_flat": round(float(recall), 4),
                       "nDCG@10": round(evaluate(qrels, run, ["nDCG@10"])["nDCG@10"], 4),
                       "k10": _latency(searcher, vectors, 10, args.rounds),
                       "k1000": _latency(searcher, vectors, 1000, args.rounds)}
                results["settings"].append(row)
                print(json.dumps(row))
    print("| index | recall@10 vs flat | nDCG@10 | k=10 p50 / p95 ms | k=1000 p50 / p95 ms |")
    print("|---|---:|---:|---:|---:|")
    for row in results["settings"]:
        print(f"| {row['system']} | {row['recall@10_vs_flat']:.4f} | {row['nDCG@10']:.4f} "
              f"| {row['k10']['p50_ms']:.3f} / {row['k10']['p95_ms']:.3f} "
              f"| {row['k1000']['p50_ms']:.3f} / {row['k1000']['p95_ms']:.3f} |")
    print(f"flat index {results['flat_bytes']:,} bytes, HNSW (M={args.m}) {results['hnsw_bytes']:,} bytes, "
          f"built in {results['hnsw_build_seconds']} s")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
