"""Impact search latency: Lucene (our wrapper and raw pyserini) vs Seismic vs brute force, on the same vectors.

    python benchmarks/bench_search.py --index INDEX_DIR --pre-encoded QUERIES.tsv [--topics scifact]
        [--bm25-index BM25_DIR] [--encoder splade-tiny] [--rounds 3] [--output results.json]

- query encoding (batch 1, the index's encoder) is timed on its own, from ``--topics`` texts;
- single-thread per-query latency (p50 / p95, ms) of k=10 and k=1000 searches of pre-encoded vectors:
  ``LaconicSearcher.search_vector`` (hits in bulk), its old per-hit path ``search_vector_per_hit``, raw
  ``LuceneImpactSearcher.search`` (pyserini's own path, the TSV line as its text, hits read out as (docid, score)
  like ours), Anserini's Java searcher on prebuilt query maps (hits read one by one), Seismic at several
  (query_cut, heap_factor), and a scipy.sparse brute-force dot product; with ``--bm25-index`` and ``--topics``,
  BM25 on the topics' texts too: ``Bm25Searcher.search`` (bulk), ``search_per_hit`` and raw pyserini
  ``LuceneSearcher.search``;
- 2-thread throughput (queries/s) of whole-topic batches: Lucene ``batch_search`` with 2 threads, Seismic
  ``batch_search`` with 2 threads, brute force as one sparse matrix product (scipy runs it on 1 thread);
- Seismic recall@10 against the exact Lucene top 10 at each setting;
- whole-topic runs through the search CLI (``python -m laconic_pyserini.search``, 1,000 hits, threads 1 and 2),
  each in a fresh process, new path against today's path before hits came in bulk (:data:`PER_HIT_CLI`: per-hit
  batches, pyserini's wrappers opened, pyserini's idf table as the vocabulary): wall time, search time, the rest
  (start-up, queries read, run written), the ratios, and whether the two run files are byte-identical;
- the CPU (model, cores, torch's capability) the numbers come from.

Systems are measured interleaved, query by query, in an order that rotates from query to query (whoever searches a
query first warms the caches for the others), so that load from other processes hits all of them alike; each
query's time is its median over the rounds. Before the timed rounds of each k, every system searches every query
once untimed (the same warm-up for all: the JVM is the same one, in Java's default tiered JIT, so each path's hot
code is C2-compiled, and profiled at that k, before it is timed; the search CLI's short runs choose C1 only,
``jvm.expect_queries``, but that is a whole-run choice the CLI rows measure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEISMIC_SETTINGS = [(5, 0.9), (10, 0.7), (20, 0.7), (50, 0.5)]

#: Today's search CLI before hits came in bulk: the searchers' per-hit batch paths, and their old start-up (the
#: JVM's default JIT, where the CLI now starts short runs with C1 only: ``jvm.expect_queries``)
#: (pyserini's wrappers opened, so ``pyserini.search.lucene`` imported with torch and transformers, and for an
#: impact index pyserini's idf table built as the vocabulary).
PER_HIT_CLI = """
import os, sys
os.environ.setdefault("LACONIC_JVM_JIT", "full")  # the old start-up: Java's default tiered JIT whatever the run
from laconic_pyserini import jvm
from laconic_pyserini.searchers import bm25, impact
opened = {}
def old_open(kind, index_dir):
    jvm.start()
    from pyserini.search.lucene import LuceneImpactSearcher, LuceneSearcher
    opened[kind] = LuceneImpactSearcher(index_dir, None) if kind == "impact" else LuceneSearcher(index_dir)
    return opened[kind].object
def old_init(cls, kind):
    new_init = cls.__init__
    def init(self, *args, **kwargs):
        new_init(self, *args, **kwargs)
        self._pyserini = opened[kind]
    cls.__init__ = init
impact.open_java_searcher = bm25.open_java_searcher = old_open
impact.index_terms = lambda reader: opened["impact"].idf
impact.BulkLucene.open_impact = classmethod(lambda cls, index_dir: None)  # old: SimpleImpactSearcher only
old_init(impact.LaconicSearcher, "impact")
old_init(bm25.Bm25Searcher, "bm25")
bm25.Bm25Searcher.batch_search = bm25.Bm25Searcher.batch_search_per_hit
impact.LaconicSearcher.batch_search_vectors = impact.LaconicSearcher.batch_search_vectors_per_hit
from laconic_pyserini.search import main
sys.exit(main(sys.argv[1:]))
"""


def cpu() -> dict:
    """The CPU the numbers come from: model, logical cores, torch's kernel capability, load when measured."""
    model = platform.processor()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        capability = f"unknown ({exc})"
    return {"model": model, "logical_cpus": os.cpu_count(), "torch_capability": capability,
            "loadavg_1min": os.getloadavg()[0]}


def _cli(per_hit: bool, argv: list[str]) -> dict:
    """One search CLI run in a fresh process: wall seconds, and the search seconds the CLI logs."""
    command = [sys.executable, "-c", PER_HIT_CLI, *argv] if per_hit else \
        [sys.executable, "-m", "laconic_pyserini.search", *argv]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    logged = re.search(r"(\d+) queries in ([0-9.]+) s", done.stderr)
    search = float(logged.group(2)) if logged else None
    # Everything but the search: interpreter and imports, JVM, index open, queries read, run written.
    rest = round(wall - search, 3) if logged else None
    return {"wall_s": round(wall, 3), "search_s": search, "other_s": rest}


def cli_runs(runs: dict[str, list[str]], rounds: int) -> dict:
    """``{name: CLI args}`` run new and per-hit, alternating, ``rounds`` times: medians, ratio, identical bytes."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in runs.items():
            times = {"bulk": [], "per-hit": []}
            files = {}
            for round_ in range(rounds):
                for path in (("bulk", "per-hit") if round_ % 2 == 0 else ("per-hit", "bulk")):
                    files[path] = Path(tmp) / f"{path}.run"
                    times[path].append(_cli(path == "per-hit", [*argv, "--output", str(files[path])]))
            summary = {path: {key: statistics.median(t[key] for t in runs_ if t[key] is not None)
                              for key in ("wall_s", "search_s", "other_s")} for path, runs_ in times.items()}
            summary["per-hit / bulk wall"] = round(summary["per-hit"]["wall_s"] / summary["bulk"]["wall_s"], 2)
            summary["per-hit / bulk search"] = round(summary["per-hit"]["search_s"] / summary["bulk"]["search_s"], 2)
            summary["byte_identical"] = files["bulk"].read_bytes() == files["per-hit"].read_bytes()
            out[name] = summary
    return out


def interleaved(systems: dict, items: list, ks: tuple[int, ...], rounds: int) -> dict:
    """``{"k=K": {system: p50/p95}}``: systems run query by query in a rotating order, each query's median kept,
    after one untimed pass of every system over every query at that k."""
    latency: dict = {}
    names = list(systems)
    for k in ks:
        times = {name: {i: [] for i in range(len(items))} for name in systems}
        # Round -1 is the warm-up, the same for every system: one whole untimed pass over the queries at this k,
        # so that the JIT has compiled (with C2, profiled at this k) each system's path before any is timed.
        for round_ in range(-1, rounds):
            for number, item in enumerate(items):
                # The first system to search a query warms Lucene's and the OS's caches for the others: rotate.
                shift = (number + round_) % len(names)
                for name in names[shift:] + names[:shift]:
                    start = time.perf_counter()
                    systems[name](item, k)
                    if round_ >= 0:
                        times[name][number].append(time.perf_counter() - start)
        latency[f"k={k}"] = {name: percentiles([statistics.median(v) for v in per_query.values()])
                             for name, per_query in times.items()}
    return latency


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


class BruteForce:
    """Exact top-k by scipy.sparse over the encoded collection (float64, no Lucene)."""

    def __init__(self, encoded_dir: str) -> None:
        import scipy.sparse

        from laconic_pyserini.encode import iter_vectors

        self.doc_ids, rows, cols, vals, self.vocab = [], [], [], [], {}
        for row, (doc_id, vector) in enumerate(iter_vectors(encoded_dir)):
            self.doc_ids.append(doc_id)
            for term, impact in vector.items():
                rows.append(row)
                cols.append(self.vocab.setdefault(term, len(self.vocab)))
                vals.append(impact)
        self.docs = scipy.sparse.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)),
                                            shape=(len(self.doc_ids), len(self.vocab)))
        self.docs_t = self.docs.T.tocsr()

    def query(self, vector: dict[str, int]):
        import scipy.sparse

        kept = [(self.vocab[t], w) for t, w in vector.items() if t in self.vocab]
        return scipy.sparse.csr_matrix((np.array([w for _, w in kept], dtype=np.float32),
                                        ([0] * len(kept), [c for c, _ in kept])), shape=(1, len(self.vocab)))

    def _top(self, scores: np.ndarray, k: int):
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.doc_ids[i], float(scores[i])) for i in top if scores[i] > 0]

    def search(self, vector: dict[str, int], k: int):
        scores = (self.query(vector) @ self.docs_t).toarray().ravel()
        return self._top(scores, k)

    def batch(self, vectors: dict[str, dict[str, int]], k: int):
        import scipy.sparse

        queries = scipy.sparse.vstack([self.query(v) for v in vectors.values()]).tocsr()
        scores = (queries @ self.docs_t).toarray()
        return {qid: self._top(scores[row], k) for row, qid in enumerate(vectors)}


OURS = "lucene (LaconicSearcher)"
PER_HIT = "lucene (LaconicSearcher, old per-hit path)"
RAW = "lucene (raw LuceneImpactSearcher)"
FLOOR = "lucene (Java searcher, prebuilt query maps)"


def bm25_latency(args: argparse.Namespace, latency: dict) -> None:
    """BM25 on the topics' texts, toolkit (bulk) vs its per-hit path vs raw pyserini, into ``latency``."""
    from pyserini.search.lucene import LuceneSearcher

    from laconic_pyserini.topics import load_topics
    from laconic_pyserini.searchers.bm25 import Bm25Searcher

    texts = list(load_topics(args.topics, "test").values())
    ours = Bm25Searcher(args.bm25_index)
    raw = LuceneSearcher(args.bm25_index)
    raw.set_bm25(0.9, 0.4)
    systems = {"bm25 (Bm25Searcher)": ours.search, "bm25 (Bm25Searcher, old per-hit path)": ours.search_per_hit,
               "bm25 (raw LuceneSearcher)": lambda text, k: [(h.docid, float(h.score)) for h in raw.search(text, k)]}
    for key, rows in interleaved(systems, texts, (10, 1000), args.rounds).items():
        latency[key].update(rows)
        latency[key]["bm25 per-hit / bulk p50"] = round(
            rows["bm25 (Bm25Searcher, old per-hit path)"]["p50_ms"] / rows["bm25 (Bm25Searcher)"]["p50_ms"], 2)
        latency[key]["bm25 raw / bulk p50"] = round(
            rows["bm25 (raw LuceneSearcher)"]["p50_ms"] / rows["bm25 (Bm25Searcher)"]["p50_ms"], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--pre-encoded", required=True)
    parser.add_argument("--topics", default=None, help="topics whose texts time query encoding (BEIR name/folder)")
    parser.add_argument("--bm25-index", default=None, help="a BM25 index of the same corpus (needs --topics)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cli-rounds", type=int, default=3, help="rounds of whole-topic CLI runs (0: none)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    from laconic_pyserini import jvm
    from laconic_pyserini.searchers.impact import LaconicSearcher
    from laconic_pyserini.searchers.queries import read_pre_encoded
    from laconic_pyserini.searchers.seismic import SeismicSearcher

    jvm.start()
    from pyserini.search.lucene import LuceneImpactSearcher

    from laconic_pyserini.modeling.cpu import kernel_decision

    decision = kernel_decision()
    print(decision.summary(), file=sys.stderr)
    results: dict = {"index": args.index, "rounds": args.rounds, "cpu": decision.to_dict(),
                     "warmup": "one untimed pass of every system over every query before each k's timed rounds",
                     "jvm_options": str(jvm.autoclass("java.lang.management.ManagementFactory")
                                        .getRuntimeMXBean().getInputArguments().toString())}
    ours = LaconicSearcher(args.index)
    vectors = read_pre_encoded(args.pre_encoded, ours.spec)
    lines = {line.split("\t", 1)[0]: line.rstrip("\n").split("\t", 1)[1]
             for line in Path(args.pre_encoded).read_text(encoding="utf-8").splitlines()}
    qids = list(vectors)
    results["queries"] = len(qids)
    raw = LuceneImpactSearcher(args.index, None)
    brute = BruteForce(ours.manifest["encoded"])
    seismic = {s: SeismicSearcher(args.index, query_cut=s[0], heap_factor=s[1]) for s in SEISMIC_SETTINGS}

    def raw_search(qid: str, k: int):
        return [(hit.docid, float(hit.score)) for hit in raw.search(lines[qid], k)]

    # The floor: Anserini's Java searcher with the Java query maps built beforehand (no Python work per query
    # but reading the hits out).
    java_queries = {qid: ours._java_query(vectors[qid]) for qid in qids}
    results["cpu"] = cpu()
    print(json.dumps(results["cpu"]), file=sys.stderr)

    def java_search(qid: str, k: int):
        return [(hit.docid, float(hit.score)) for hit in raw.object.search(java_queries[qid], k)]

    systems = {OURS: lambda qid, k: ours.search_vector(vectors[qid], k),
               PER_HIT: lambda qid, k: ours.search_vector_per_hit(vectors[qid], k),
               RAW: raw_search,
               FLOOR: java_search,
               "brute force (scipy.sparse)": lambda qid, k: brute.search(vectors[qid], k)}
    for (cut, factor), searcher in seismic.items():
        systems[f"seismic query_cut={cut} heap_factor={factor}"] = \
            lambda qid, k, searcher=searcher: searcher.search_vector(vectors[qid], k)

    latency = interleaved(systems, qids, (10, 1000), args.rounds)
    for k in (10, 1000):
        row = latency[f"k={k}"]
        row["wrapper / raw p50"] = round(row[OURS]["p50_ms"] / row[RAW]["p50_ms"], 3)
        row["wrapper / Java floor p50"] = round(row[OURS]["p50_ms"] / row[FLOOR]["p50_ms"], 3)
        row["raw / wrapper p50"] = round(row[RAW]["p50_ms"] / row[OURS]["p50_ms"], 2)
        row["per-hit / wrapper p50"] = round(row[PER_HIT]["p50_ms"] / row[OURS]["p50_ms"], 2)
    latency["k=1000"]["wrapper k=1000 / its k=10 p50"] = round(
        latency["k=1000"][OURS]["p50_ms"] / latency["k=10"][OURS]["p50_ms"], 2)
    if args.bm25_index and args.topics:
        bm25_latency(args, latency)
    results["single_thread_latency"] = latency

    exact = ours.batch_search_vectors(vectors, 10, threads=2)
    recall = {}
    for (cut, factor), searcher in seismic.items():
        found = searcher.batch_search_vectors(vectors, 10, threads=2)
        recall[f"query_cut={cut} heap_factor={factor}"] = round(float(np.mean(
            [len({d for d, _ in found[q]} & {d for d, _ in exact[q]}) / max(1, len(exact[q])) for q in qids])), 4)
    results["seismic_recall@10_vs_lucene"] = recall

    throughput = {}
    batch_systems = {"lucene (LaconicSearcher, 2 threads)": lambda k: ours.batch_search_vectors(vectors, k, 2),
                     "brute force (scipy.sparse, one matrix product, 1 thread)": lambda k: brute.batch(vectors, k)}
    for (cut, factor), searcher in seismic.items():
        batch_systems[f"seismic query_cut={cut} heap_factor={factor} (2 threads)"] = \
            lambda k, searcher=searcher: searcher.batch_search_vectors(vectors, k, 2)
    for k in (10, 1000):
        elapsed = {name: [] for name in batch_systems}
        for _ in range(args.rounds):
            for name, run in batch_systems.items():
                start = time.perf_counter()
                run(k)
                elapsed[name].append(time.perf_counter() - start)
        throughput[f"k={k}"] = {name: round(len(qids) / statistics.median(v), 1) for name, v in elapsed.items()}
    results["throughput_qps"] = throughput

    if args.topics:
        from laconic_pyserini.topics import load_topics

        topics = load_topics(args.topics, "test")
        texts = [topics[q] for q in qids if q in topics]
        ours.queries.encode(texts[:5])  # load the model, warm up
        samples = []
        for text in texts:
            start = time.perf_counter()
            ours.queries.encode([text])
            samples.append(time.perf_counter() - start)
        results["query_encoding_batch1"] = {"encoder": ours.spec.name, **percentiles(samples)}

    if args.cli_rounds:
        runs = {f"impact --pre-encoded, threads {t}": ["--index", args.index, "--pre-encoded", args.pre_encoded,
                                                     "--hits", "1000", "--threads", str(t)] for t in (1, 2)}
        if args.bm25_index and args.topics:
            runs.update({f"bm25 --topics, threads {t}": ["--index", args.bm25_index, "--topics", args.topics,
                                                        "--hits", "1000", "--threads", str(t)] for t in (1, 2)})
        results["cli_run_1000_hits"] = cli_runs(runs, args.cli_rounds)

    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
