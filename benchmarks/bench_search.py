"""Impact search latency: Lucene (our wrapper and raw pyserini) vs Seismic vs brute force, on the same vectors.

    python benchmarks/bench_search.py --index INDEX_DIR --pre-encoded QUERIES.tsv [--topics scifact]
        [--encoder splade-tiny] [--rounds 3] [--output results.json]

- query encoding (batch 1, the index's encoder) is timed on its own, from ``--topics`` texts;
- single-thread per-query latency (p50 / p95, ms) of k=10 and k=1000 searches of pre-encoded vectors:
  ``LaconicSearcher.search_vector``, raw ``LuceneImpactSearcher.search`` (pyserini's own path, the TSV line as its
  text, hits read out as (docid, score) like ours), Anserini's Java searcher on prebuilt query maps (the floor),
  Seismic at several (query_cut, heap_factor), and a scipy.sparse
  brute-force dot product;
- 2-thread throughput (queries/s) of whole-topic batches: Lucene ``batch_search`` with 2 threads, Seismic
  ``batch_search`` with 2 threads, brute force as one sparse matrix product (scipy runs it on 1 thread);
- Seismic recall@10 against the exact Lucene top 10 at each setting.

Systems are measured interleaved, query by query, in an order that rotates from query to query (whoever searches a
query first warms the caches for the others), so that load from other processes hits all of them alike; each
query's time is its median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

SEISMIC_SETTINGS = [(5, 0.9), (10, 0.7), (20, 0.7), (50, 0.5)]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--pre-encoded", required=True)
    parser.add_argument("--topics", default=None, help="topics whose texts time query encoding (BEIR name/folder)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    from laconic_pyserini import jvm
    from laconic_pyserini.searchers.impact import LaconicSearcher
    from laconic_pyserini.searchers.queries import read_pre_encoded
    from laconic_pyserini.searchers.seismic import SeismicSearcher

    jvm.start()
    from pyserini.search.lucene import LuceneImpactSearcher

    results: dict = {"index": args.index, "rounds": args.rounds}
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

    def java_search(qid: str, k: int):
        return [(hit.docid, float(hit.score)) for hit in raw.object.search(java_queries[qid], k)]

    systems = {"lucene (LaconicSearcher)": lambda qid, k: ours.search_vector(vectors[qid], k),
               "lucene (raw LuceneImpactSearcher)": raw_search,
               "lucene (Java searcher, prebuilt query maps)": java_search,
               "brute force (scipy.sparse)": lambda qid, k: brute.search(vectors[qid], k)}
    for (cut, factor), searcher in seismic.items():
        systems[f"seismic query_cut={cut} heap_factor={factor}"] = \
            lambda qid, k, searcher=searcher: searcher.search_vector(vectors[qid], k)

    # Warm-up: JIT, page cache, first-touch allocations.
    for system in systems.values():
        for qid in qids[:50]:
            system(qid, 1000)

    latency: dict = {}
    for k in (10, 1000):
        times = {name: {qid: [] for qid in qids} for name in systems}
        names = list(systems)
        for round_ in range(args.rounds):
            for number, qid in enumerate(qids):
                # The first system to search a query warms Lucene's and the OS's caches for the others: rotate.
                shift = (number + round_) % len(names)
                for name in names[shift:] + names[:shift]:
                    start = time.perf_counter()
                    systems[name](qid, k)
                    times[name][qid].append(time.perf_counter() - start)
        latency[f"k={k}"] = {name: percentiles([statistics.median(v) for v in per_query.values()])
                             for name, per_query in times.items()}
        ratio_p50 = latency[f"k={k}"]["lucene (LaconicSearcher)"]["p50_ms"] / \
            latency[f"k={k}"]["lucene (raw LuceneImpactSearcher)"]["p50_ms"]
        latency[f"k={k}"]["wrapper / raw p50"] = round(ratio_p50, 3)
        latency[f"k={k}"]["wrapper / Java floor p50"] = round(
            latency[f"k={k}"]["lucene (LaconicSearcher)"]["p50_ms"] /
            latency[f"k={k}"]["lucene (Java searcher, prebuilt query maps)"]["p50_ms"], 3)
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

    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
