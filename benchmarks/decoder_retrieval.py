"""``bench_decoder.py retrieval``: a real decoder end to end, quantised query encoders over one full-precision index.

The documents are encoded once at full precision (fp32) into a Lucene impact index: every SciFact document that
the test qrels judge, then the corpus's first others up to ``--docs``. Each query variant (``fp32``, ``bf16`` and
the ``--quantize`` schemes) runs in its own process: it encodes the test queries one at a time (batch 1, as a
search service does), keeps each query's top-20 terms, and searches the index with them (top 10). Against the fp32
query encoder of the same run: mean top-20 term overlap, mean top-10 document overlap, and the nDCG@10 difference.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

SCIFACT = "scifact"


def _subset(folder: Path, docs: int) -> Path:
    """``folder/corpus.jsonl``: the judged test documents first, then the corpus's first others, ``docs`` in all."""
    from laconic_pyserini.data import resolve_dataset
    from laconic_pyserini.topics import load_qrels

    root = resolve_dataset(SCIFACT)
    judged = {doc for by_doc in load_qrels(root, "test").values() for doc in by_doc}
    lines = (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    chosen = [line for line in lines if json.loads(line)["_id"] in judged]
    chosen += [line for line in lines if json.loads(line)["_id"] not in judged][:max(0, docs - len(chosen))]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return path


def index_worker(task: dict) -> dict:
    """The fp32 impact index of the document subset (kept in ``task["tmp"]`` and reused when it is complete)."""
    from laconic_pyserini.encode.corpus import encode_corpus
    from laconic_pyserini.index.impact import build_impact_index
    from laconic_pyserini.spec import load_spec

    work = Path(task["tmp"]) / f"retrieval-{task['encoder']}-{task['docs']}"
    index = work / "index"
    if not (index / "manifest.json").exists():
        corpus = _subset(work, task["docs"])
        start = time.perf_counter()
        encode_corpus(corpus, work / "enc", load_spec(task["encoder"]), dtype="fp32", progress=False)
        build_impact_index(work / "enc", index)
        print(f"indexed {task['docs']} documents in {time.perf_counter() - start:.0f} s", flush=True)
    return {"index": str(index)}


def query_worker(task: dict) -> dict:
    """One query encoder (``task["variant"]``): top-20 terms of each test query and its top-10 run."""
    from laconic_pyserini.data import resolve_dataset
    from laconic_pyserini.eval import evaluate
    from laconic_pyserini.modeling.sparse_encoder import load_sparse_encoder
    from laconic_pyserini.searchers.impact import LaconicSearcher
    from laconic_pyserini.spec import load_spec
    from laconic_pyserini.topics import load_qrels, load_topics

    variant = task["variant"]
    spec = load_spec(task["encoder"])
    kwargs = {"dtype": variant} if variant in ("fp32", "bf16") else {"quantize": variant}
    encoder = load_sparse_encoder(spec, **kwargs)
    root = resolve_dataset(SCIFACT)
    topics = dict(sorted(load_topics(root, "test").items(), key=lambda kv: int(kv[0]))[:task["queries"]])
    top20, seconds = {}, []
    for qid, text in topics.items():
        start = time.perf_counter()
        weights = encoder.encode_weights([spec.query_text(text)])[0]
        seconds.append(time.perf_counter() - start)
        top20[qid] = weights.topk(20).indices.tolist()
    searcher = LaconicSearcher(task["index"], encoder=encoder)
    run = searcher.batch_search(topics, k=10)
    ndcg = evaluate(load_qrels(root, "test"), run, ["nDCG@10"])["nDCG@10"]
    top10 = {qid: [doc for doc, _ in hits[:10]] for qid, hits in run.items()}
    return {"variant": variant, "ndcg10": ndcg, "top20": top20, "top10": top10,
            "query_p50_ms": 1000 * statistics.median(seconds), "kernels": {
                k: v for k, v in encoder.kernels.items() if k != "cpu"}}


def bench_retrieval(args, tmp: Path, run_worker) -> dict:
    """The index once, then every variant in its own process; agreement with the fp32 query encoder."""
    index = run_worker({"bench": "retrieval-index", "encoder": args.encoder, "docs": args.docs,
                        "tmp": str(tmp)})["index"]
    rows = {}
    for variant in ["fp32", *[v for v in args.quantize if v != "fp32"]]:
        rows[variant] = run_worker({"bench": "retrieval-queries", "encoder": args.encoder, "variant": variant,
                                    "index": index, "queries": args.queries})
    ref = rows["fp32"]
    table = {}
    print(f"\n{args.encoder}, fp32 impact index of {args.docs} SciFact documents, {len(ref['top20'])} test queries "
          f"at batch 1:\n| query encoder | top-20 terms vs fp32 | top-10 docs vs fp32 | nDCG@10 | Δ nDCG@10 "
          f"| query p50 ms |\n|---|---|---|---|---|---|")
    for variant, r in rows.items():
        terms = statistics.mean(len(set(r["top20"][q]) & set(ref["top20"][q])) / 20 for q in ref["top20"])
        docs = statistics.mean(len(set(r["top10"].get(q, [])) & set(ref["top10"][q])) / max(1, len(ref["top10"][q]))
                               for q in ref["top10"])
        table[variant] = {"top20_terms_overlap": terms, "top10_docs_overlap": docs, "ndcg10": r["ndcg10"],
                          "ndcg10_minus_fp32": r["ndcg10"] - ref["ndcg10"], "query_p50_ms": r["query_p50_ms"],
                          "kernels": r["kernels"], "loadavg_1m": r["loadavg_1m"]}
        print(f"| {variant} | {terms:.3f} | {docs:.3f} | {r['ndcg10']:.4f} | {r['ndcg10'] - ref['ndcg10']:+.4f} "
              f"| {r['query_p50_ms']:.1f} |")
    return {"encoder": args.encoder, "docs": args.docs, "queries": len(ref["top20"]), "index": index,
            "retrieval": table}
