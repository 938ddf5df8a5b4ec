"""Milvus vs Lucene on the same vectors, in one run: export time, server RSS, bytes per document, latency, throughput.

    python benchmarks/bench_milvus.py --encoded ENCODED_DIR --index LUCENE_IMPACT_DIR --pre-encoded QUERIES.tsv
        [--dense FAISS_FLAT_DIR --topics scifact] [--uri milvus://HOST:PORT/COLLECTION] [--rounds 3]
        [--output results.json]

Without ``--uri`` a local Milvus server (milvus-lite 2.5.1's real binary) is started on a free loopback port for the
run, so its RSS can be read; with ``--uri`` the collection is exported there (the RSS then belongs to that server
and is not measured). Reported, per engine where it applies:

- export: seconds and documents/s of ``python -m laconic_pyserini.index --input ENCODED --index milvus://…``;
- memory: the server's RSS before the export, after the export and load, after the searches; bytes per document
  from the RSS growth and from the server's data folder on disk;
- single-thread per-query latency (p50 / p95, ms) at k=10 and k=1000, Lucene (``LaconicSearcher.search_vector``)
  and Milvus (one query per request), interleaved query by query in an order that rotates, each query's time its
  median over the rounds;
- 2-thread throughput (queries/s) of whole-topic batches: Lucene ``batch_search`` with 2 threads, Milvus with 2
  threads of 64-query requests and of 1-query requests;
- the share of queries whose top-10 scores equal Lucene's (exactness, in the same run);
- with ``--dense``: the same latency/throughput for MiniLM in Milvus (FLAT) vs faiss flat.

Numbers go into docs/benchmarks.md only from a run on an idle machine, with this command and the CPU class.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    import psutil

    process = psutil.Process(pid)
    return round(sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20, 1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def interleaved_latency(systems: dict, queries: dict, k: int, rounds: int) -> dict:
    """Per-query medians over ``rounds`` of each system's single-query call, in a rotating order."""
    names = list(systems)
    times = {name: {qid: [] for qid in queries} for name in names}
    for _ in range(rounds):
        for position, (qid, query) in enumerate(queries.items()):
            order = names[position % len(names):] + names[:position % len(names)]
            for name in order:
                start = time.perf_counter()
                systems[name](query, k)
                times[name][qid].append(time.perf_counter() - start)
    return {name: percentiles([statistics.median(v) for v in times[name].values()]) for name in names}


def throughput(function, queries: dict, k: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        function(queries, k)
        best = min(best, time.perf_counter() - start)
    return round(len(queries) / best, 2)


def top10_agreement(expected: dict, got: dict) -> float:
    same = sum(1 for q in expected if [s for _, s in expected[q][:10]] == [s for _, s in got[q][:10]])
    return round(same / len(expected), 4)


def sparse_part(args, uri: str, pid: int | None, data_dir: Path | None) -> dict:
    from laconic_pyserini.index.milvus import export_to_milvus
    from laconic_pyserini.searchers.impact import LaconicSearcher
    from laconic_pyserini.searchers.milvus import MilvusSearcher
    from laconic_pyserini.searchers.queries import read_pre_encoded

    result = {"rss_mb_before_export": rss_mb(pid)}
    start = time.perf_counter()
    manifest = export_to_milvus(args.encoded, uri, batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - start
    documents = manifest["documents"]
    result.update(documents=documents, export_seconds=round(seconds, 2),
                  export_docs_per_s=round(documents / seconds, 1))
    lucene = LaconicSearcher(args.index)
    milvus = MilvusSearcher(uri)
    vectors = read_pre_encoded(args.pre_encoded, lucene.spec)
    prepared = milvus.query_vectors(vectors)
    result["rss_mb_after_load"] = rss_mb(pid)
    # Each system gets its own form of the same query: terms for Lucene, term ids for Milvus (prepared once).
    calls = {"lucene": lambda qid, k: lucene.search_vector(vectors[qid], k),
             "milvus": lambda qid, k: milvus.search_vectors({qid: prepared[qid]}, k)}
    for k in (10, 1000):
        result[f"latency_k{k}_1thread"] = interleaved_latency(calls, {qid: qid for qid in vectors}, k, args.rounds)
    result["throughput_2threads_k1000_qps"] = {
        "lucene": throughput(lambda v, k: lucene.batch_search_vectors(v, k, 2), vectors, 1000, args.rounds),
        "milvus_batch64": throughput(lambda v, k: milvus.search_vectors(v, k, 2), prepared, 1000, args.rounds),
    }
    milvus.search_batch = 1
    result["throughput_2threads_k1000_qps"]["milvus_batch1"] = throughput(
        lambda v, k: milvus.search_vectors(v, k, 2), prepared, 1000, args.rounds)
    result["top10_same_scores_as_lucene"] = top10_agreement(lucene.batch_search_vectors(vectors, 10),
                                                            milvus.search_vectors(prepared, 10))
    result["rss_mb_after_search"] = rss_mb(pid)
    if pid is not None:
        result["rss_bytes_per_document"] = round((result["rss_mb_after_load"] - result["rss_mb_before_export"])
                                                 * 2**20 / documents, 1)
    if data_dir is not None:
        result["disk_bytes_per_document"] = round(folder_bytes(data_dir) / documents, 1)
    result["lucene_index_bytes_per_document"] = round(folder_bytes(Path(args.index)) / documents, 1)
    return result


def dense_part(args, uri: str, pid: int | None) -> dict:
    from laconic_pyserini.topics import load_topics
    from laconic_pyserini.index.milvus import export_to_milvus
    from laconic_pyserini.searchers.faiss import FaissSearcher
    from laconic_pyserini.searchers.milvus import MilvusSearcher

    before = rss_mb(pid)
    start = time.perf_counter()
    manifest = export_to_milvus(args.dense, uri, batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - start
    faiss_searcher, milvus = FaissSearcher(args.dense), MilvusSearcher(uri)
    topics = load_topics(args.topics, "test")
    matrix = faiss_searcher.encode_queries(list(topics.values()))
    rows = {qid: matrix[i:i + 1] for i, qid in enumerate(topics)}
    lists = {qid: matrix[i].tolist() for i, qid in enumerate(topics)}
    calls = {"faiss": lambda qid, k: faiss_searcher.search_vectors(rows[qid], k, 1),
             "milvus": lambda qid, k: milvus.search_vectors({qid: lists[qid]}, k)}
    result = {"documents": manifest["documents"], "export_seconds": round(seconds, 2),
              "rss_mb_growth": None if pid is None else round(rss_mb(pid) - before, 1)}
    result["latency_k10_1thread"] = interleaved_latency(calls, {q: q for q in topics}, 10, args.rounds)
    result["throughput_2threads_k1000_qps"] = {
        "faiss": throughput(lambda v, k: faiss_searcher.search_vectors(matrix, k, 2), lists, 1000, args.rounds),
        "milvus_batch64": throughput(lambda v, k: milvus.search_vectors(v, k, 2), lists, 1000, args.rounds)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoded", required=True, help="encoded collection (python -m laconic_pyserini.encode)")
    parser.add_argument("--index", required=True, help="the Lucene impact index of the same collection")
    parser.add_argument("--pre-encoded", required=True, help="queries.tsv (python -m laconic_pyserini.encode.query)")
    parser.add_argument("--dense", help="a faiss flat folder of the same corpus (laconic_pyserini.encode.dense)")
    parser.add_argument("--topics", default="scifact", help="--dense: topics whose texts are encoded")
    parser.add_argument("--uri", help="milvus://HOST:PORT/COLLECTION (default: a local server for this run)")
    parser.add_argument("--batch-size", type=int, default=1000, help="documents per upsert")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="bench_milvus.json")
    args = parser.parse_args()
    report = {"command": "python benchmarks/bench_milvus.py " + " ".join(sys.argv[1:]),
              "cpu": cpu_model(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as tmp:
        if args.uri:
            report["sparse"] = sparse_part(args, args.uri, None, None)
            if args.dense:
                report["dense"] = dense_part(args, args.uri.rsplit("/", 1)[0] + "/bench_dense", None)
        else:
            from laconic_pyserini.index.milvus_server import LocalMilvus

            with LocalMilvus(Path(tmp) / "server") as server:
                report["server"] = {"address": server.address, "rss_mb_idle": rss_mb(server.pid)}
                base = f"milvus://{server.address}"
                report["sparse"] = sparse_part(args, f"{base}/bench_sparse", server.pid, Path(tmp) / "server")
                if args.dense:
                    report["dense"] = dense_part(args, f"{base}/bench_dense", server.pid)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
