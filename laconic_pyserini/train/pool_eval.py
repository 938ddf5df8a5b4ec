"""A small, documented evaluation for CPU-sized training runs: a pooled sub-corpus instead of the whole corpus.

    python -m laconic_pyserini.train.pool_eval --encoder SPEC_OR_FOLDER [--encoder ...] --dataset scifact
        --bm25-index INDEX_DIR --output DIR [--queries 50] [--pool-depth 5] [--max-length 128]

Encoding a whole BEIR corpus with a 135M-parameter decoder takes hours on a shared 2-core CPU, so this scores the
first ``--queries`` judged test queries (file order) against a sub-corpus: the union, over those queries, of their
judged documents and BM25's top ``--pool-depth``. Every query is ranked against the whole sub-corpus (not only its
own candidates), by the exact dot product of Anserini integer impacts (``rint(w · 100)``, the same quantisation an
impact index holds), and nDCG@10 is computed with trec_eval -c semantics. BM25's full-corpus ranking restricted to
the same sub-corpus is reported beside it. The numbers are comparable between encoders on the same pool, not with
published full-corpus numbers: the pool holds every judged document, which makes the task easier.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..data import iter_corpus, load_qrels, load_topics, resolve_dataset
from ..eval import evaluate
from ..quantize import quantize
from ..run import Run, write_trec_run

logger = logging.getLogger(__name__)


def build_pool(dataset: str | os.PathLike, bm25_index: str | os.PathLike, *, queries: int, depth: int,
               split: str = "test") -> tuple[dict[str, str], dict[str, dict[str, int]], list, Run]:
    """(topics, qrels of those topics, pooled documents in corpus order, BM25 run restricted to the pool)."""
    from ..searchers import open_searcher

    topics = dict(list(load_topics(dataset, split).items())[:queries])
    qrels = {q: docs for q, docs in load_qrels(dataset, split).items() if q in topics}
    bm25 = open_searcher(bm25_index).batch_search(topics, 1000, 1)
    pool = {d for docs in qrels.values() for d in docs}
    pool |= {d for hits in bm25.values() for d, _ in hits[:depth]}
    docs = [doc for doc in iter_corpus(resolve_dataset(dataset)) if doc.id in pool]
    bm25_pool = {q: [(d, s) for d, s in hits if d in pool] for q, hits in bm25.items()}
    return topics, qrels, docs, bm25_pool


def score_pool(query_vectors: dict[str, dict[str, int]], doc_vectors: dict[str, dict[str, int]], k: int = 100) -> Run:
    """Exact impact scores of every query against every pooled document (what an impact index computes)."""
    run: Run = {}
    for qid, q in query_vectors.items():
        scores = [(d, float(sum(w * vec.get(t, 0) for t, w in q.items()))) for d, vec in doc_vectors.items()]
        scores = [(d, s) for d, s in scores if s > 0]
        scores.sort(key=lambda x: (-x[1], x[0]))
        run[qid] = scores[:k]
    return run


def evaluate_encoder(encoder: str, topics: dict[str, str], qrels, docs, *, max_length: int, batch_size: int,
                     out_dir: Path) -> dict:
    from ..modeling import load_sparse_encoder
    from ..spec import load_spec

    spec = load_spec(encoder, max_length=max_length)
    start = time.perf_counter()
    model = load_sparse_encoder(spec)
    loaded = time.perf_counter()
    doc_vectors = {}
    for i in range(0, len(docs), batch_size):
        batch = docs[i:i + batch_size]
        for doc, vec in zip(batch, model.encode_documents([d.contents for d in batch])):
            doc_vectors[doc.id] = quantize(vec, spec.quant_scale)
        logger.info("%s: %d/%d documents", spec.name, min(i + batch_size, len(docs)), len(docs))
    encoded = time.perf_counter()
    qids = list(topics)
    query_vectors = {q: quantize(v, spec.quant_scale)
                     for q, v in zip(qids, model.encode_queries([topics[q] for q in qids]))}
    run = score_pool(query_vectors, doc_vectors)
    done = time.perf_counter()
    write_trec_run(run, out_dir / f"run.{spec.name}.txt")
    metrics = evaluate(qrels, run, ["nDCG@10", "R@100"])
    nnz_d = sum(len(v) for v in doc_vectors.values()) / max(1, len(doc_vectors))
    nnz_q = sum(len(v) for v in query_vectors.values()) / max(1, len(query_vectors))
    return {"encoder": encoder, "name": spec.name, **metrics, "doc_terms": round(nnz_d, 1),
            "query_terms": round(nnz_q, 1), "load_s": round(loaded - start, 1),
            "encode_docs_s": round(encoded - loaded, 1), "queries_and_scoring_s": round(done - encoded, 1)}


def evaluate_encoder_full(encoder: str, topics: dict[str, str], qrels, docs, *, max_length: int, batch_size: int,
                          out_dir: Path) -> dict:
    """The same pool scored with the full float vectors (no top-k, no quantisation): what training optimises.
    The gap to :func:`evaluate_encoder` shows how much of a model's ranking survives the top-512 cut."""
    import torch

    from ..modeling import load_sparse_encoder
    from ..spec import load_spec

    spec = load_spec(encoder, max_length=max_length)
    model = load_sparse_encoder(spec)
    model.spec = dataclasses.replace(spec, top_k=None)
    start = time.perf_counter()
    doc_rows = []
    for i in range(0, len(docs), batch_size):
        texts = [spec.document_text("", d.contents) for d in docs[i:i + batch_size]]
        doc_rows.append(model.encode_weights(texts))
    qids = list(topics)
    queries = model.encode_weights([spec.query_text(topics[q]) for q in qids])
    scores = queries @ torch.cat(doc_rows).T
    run = {}
    for row, qid in enumerate(qids):
        top = torch.argsort(scores[row], descending=True)[:100].tolist()
        run[qid] = [(docs[j].id, float(scores[row, j])) for j in top]
    write_trec_run(run, out_dir / f"run.{spec.name}.full.txt")
    metrics = evaluate(qrels, run, ["nDCG@10", "R@100"])
    return {"encoder": encoder, "name": spec.name, "scoring": "full float vectors, no top-k", **metrics,
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.train.pool_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", action="append", required=True, help="spec name or model folder (repeatable)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--bm25-index", required=True, help="BM25 index of the dataset (builds the pool)")
    parser.add_argument("--output", required=True, help="folder for runs and results.jsonl")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--pool-depth", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--full-vectors", action="store_true",
                        help="score with the full float vectors (no top-k, no quantisation) instead of impacts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    topics, qrels, docs, bm25 = build_pool(args.dataset, args.bm25_index, queries=args.queries,
                                           depth=args.pool_depth, split=args.split)
    pool = {"dataset": str(args.dataset), "queries": len(topics), "pool_depth": args.pool_depth,
            "pool_documents": len(docs), "max_length": args.max_length,
            "bm25_pool": evaluate(qrels, bm25, ["nDCG@10", "R@100"])}
    (out_dir / "pool.json").write_text(json.dumps(pool, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(pool))
    for encoder in args.encoder:
        score = evaluate_encoder_full if args.full_vectors else evaluate_encoder
        result = score(encoder, topics, qrels, docs, max_length=args.max_length, batch_size=args.batch_size,
                       out_dir=out_dir)
        with open(out_dir / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
