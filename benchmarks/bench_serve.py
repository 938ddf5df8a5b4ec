"""Closed-loop load on the search service over loopback, batching on and off in the same run.

    python benchmarks/bench_serve.py --index splade=INDEX_DIR --topics scifact [--clients 1 4 16 64]
        [--requests 400] [--seconds 30] [--output FILE.json]

For each setting (batching on, then off) one server process is started (``python -m laconic_pyserini.serve``,
its defaults otherwise), warmed, and for each client count C that many threads each send one request, wait for
its answer and send the next (closed loop), until ``--requests`` answers or ``--seconds`` have passed. Recorded:
queries/s, p50/p95/p99 latency, errors (any status but 200, 429 counted apart), the encode batch-size histogram
(from ``/metrics``, per client count) and the server's resident set (VmRSS) after each step. The machine may be
shared: the load average is recorded beside every step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from serve_process import ServerProcess  # noqa: E402  (the tests' server process: free port, /ready wait)

from laconic_pyserini.topics import load_topics  # noqa: E402


def batch_histogram(server: ServerProcess) -> dict[str, float]:
    text = server.get("/metrics")[1]["text"]
    return {line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("laconic_encode_batch_size_bucket")}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def closed_loop(server: ServerProcess, index: str, texts: list[str], clients: int, requests: int,
                seconds: float) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests))
    stop_at = time.monotonic() + seconds

    def client() -> None:
        for n in counter:
            if time.monotonic() > stop_at:
                return
            query = urllib.parse.urlencode({"query": texts[n % len(texts)], "hits": 10})
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{server.url}/v1/{index}/search?{query}", timeout=120) as response:
                    response.read()
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            with lock:
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1

    before = batch_histogram(server)
    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    after = batch_histogram(server)
    ordered = sorted(latencies)
    quantile = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")
    return {"clients": clients, "requests": len(latencies), "seconds": elapsed,
            "qps": statuses.get(200, 0) / elapsed, "p50_ms": quantile(0.50), "p95_ms": quantile(0.95),
            "p99_ms": quantile(0.99), "mean_ms": statistics.fmean(ordered) * 1000 if ordered else float("nan"),
            "rejected_429": statuses.get(429, 0), "errors": sum(v for k, v in statuses.items() if k not in (200, 429)),
            "batch_histogram": {le: after[le] - before.get(le, 0) for le in after},
            "server_rss_mb": rss_mb(server.process.pid), "load_average": os.getloadavg()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="NAME=LOCATION, as serve takes it")
    parser.add_argument("--topics", default="scifact")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=400, help="answers per client count, at most")
    parser.add_argument("--seconds", type=float, default=30.0, help="time per client count, at most")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    name = args.index.split("=", 1)[0]
    texts = list(load_topics(args.topics, "test").values())
    results = {}
    for setting, flags in (("batching", []), ("one-at-a-time", ["--no-batching"])):
        log = Path(f"/tmp/bench_serve.{setting}.log")
        server = ServerProcess(["--index", args.index, "--no-mcp", "--queue-bound", "256", *flags], log=log)
        try:
            closed_loop(server, name, texts, 1, 20, 10)  # warm-up: JIT, first allocations
            results[setting] = [closed_loop(server, name, texts, c, args.requests, args.seconds)
                                for c in args.clients]
        finally:
            server.terminate()
        for row in results[setting]:
            print(f"{setting:>14} clients {row['clients']:>3}: {row['qps']:7.1f} q/s  p50 {row['p50_ms']:7.1f} ms  "
                  f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}  429 {row['rejected_429']}  "
                  f"RSS {row['server_rss_mb']:.0f} MB")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
