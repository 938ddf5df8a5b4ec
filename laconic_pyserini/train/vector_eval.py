"""Score a sparse encoder on a whole BEIR test set by brute force, as served and as trained, from one encoding.

    python -m laconic_pyserini.train.vector_eval --encoder SPEC_OR_FOLDER --dataset scifact --output DIR
        [--split test] [--max-length 64] [--dtype auto|fp32|bf16] [--batch-size 32] [--threads N]

Every document is encoded once into its full float vector (no top-k). Two runs come from it:

- ``impact``: each vector cut to the spec's top-k and quantised to Anserini impacts (``rint(w · scale)``, ≤ 0
  dropped), queries likewise, scored by the exact integer dot product: what a Lucene impact index of this encoder
  returns (the test suite checks that Lucene's scores equal this dot product).
- ``full``: the float vectors' dot product with no cut: what the training loss optimises.

For a model in training the gap between the two says how much of its ranking survives the index's top-k. A
vocabulary-by-corpus float matrix is held in memory (SciFact × SmolLM2: 5,183 × 49,152 × 4 B = 1 GB).
Results go to ``DIR/results.json`` (with both runs as TREC files); a rerun with the same arguments reuses them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..data import iter_corpus, resolve_dataset
from ..errors import cli, require_at_least
from ..eval import evaluate
from ..outputs import write_json_atomic
from ..quantize import quantize_tensor
from ..topics import load_qrels, load_topics
from ..run import Run, write_trec_run

logger = logging.getLogger(__name__)


def _rank(scores, qids: list[str], doc_ids: list[str], hits: int) -> Run:
    import torch

    values, indices = torch.topk(scores, min(hits, scores.shape[1]), dim=1)
    return {qid: [(doc_ids[j], float(v)) for v, j in zip(values[row].tolist(), indices[row].tolist()) if v > 0]
            for row, qid in enumerate(qids)}


def index_impacts(weights, spec):
    """The integer vectors an impact index holds for these full weights: the spec's top-k, then its quantisation."""
    from ..modeling.sparse_head import keep_top_k

    return quantize_tensor(keep_top_k(weights, spec.top_k), spec.quant_scale)


def vector_eval(encoder: str, dataset: str, out_dir: str | Path, *, split: str = "test", max_length: int = 64,
                dtype: str = "auto", batch_size: int = 32, hits: int = 1000) -> dict:
    import torch

    from ..modeling import load_sparse_encoder
    from ..spec import load_spec

    out_dir = Path(out_dir)
    done = out_dir / "results.json"
    args = {"encoder": encoder, "dataset": dataset, "split": split, "max_length": max_length, "dtype": dtype}
    if done.exists():
        previous = json.loads(done.read_text(encoding="utf-8"))
        if previous.get("arguments") == args:
            return previous
    spec = load_spec(encoder, max_length=max_length)
    started = time.perf_counter()
    model = load_sparse_encoder(spec, dtype=dtype)
    folder = resolve_dataset(dataset)
    docs = list(iter_corpus(folder))
    order = sorted(range(len(docs)), key=lambda i: len(docs[i].contents))  # less padding per batch
    matrix = torch.empty((len(docs), model.vocab_size), dtype=torch.float32)
    loaded = time.perf_counter()
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        texts = [spec.document_text("", docs[i].contents) for i in rows]
        matrix[rows] = model.encode_weights(texts, full=True)  # the cut is applied below
        if (start // batch_size) % 20 == 0:
            logger.info("%s: %d/%d documents", spec.name, start + len(rows), len(docs))
    encoded = time.perf_counter()
    topics = load_topics(folder, split)
    qids = list(topics)
    queries = model.encode_weights([spec.query_text(topics[q]) for q in qids], full=True)
    doc_ids = [d.id for d in docs]
    full = _rank(queries @ matrix.T, qids, doc_ids, hits)
    doc_impacts = index_impacts(matrix, spec).to_sparse_csr()
    query_impacts = index_impacts(queries, spec)
    impact = _rank((doc_impacts @ query_impacts.T).T, qids, doc_ids, hits)
    qrels = load_qrels(folder, split)
    write_trec_run(impact, out_dir / "run.impact.trec")
    write_trec_run(full, out_dir / "run.full.trec")
    result = {"arguments": args, "name": spec.name, "kernels": model.kernels, "documents": len(docs),
              "queries": len(qids),
              "impact": evaluate(qrels, impact), "full": evaluate(qrels, full),
              "nonzero_doc_terms": float((matrix > 0).sum(dim=1).float().mean()),
              "nonzero_query_terms": float((queries > 0).sum(dim=1).float().mean()),
              "impact_doc_terms": float((doc_impacts.values() > 0).sum()) / len(docs),
              "load_s": round(loaded - started, 1), "encode_docs_s": round(encoded - loaded, 1),
              "total_s": round(time.perf_counter() - started, 1)}
    write_json_atomic(done, result)
    return result


@cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.train.vector_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", required=True, help="spec name, hub id or model folder (a training output)")
    parser.add_argument("--dataset", required=True, help="BEIR folder or name")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output", required=True, help="folder for results.json and the two runs")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto: bf16 for a decoder where this CPU runs bf16 fast, else fp32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    require_at_least(1, {"--max-length": args.max_length, "--batch-size": args.batch_size, "--threads": args.threads})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from ..modeling.cpu import threads

    with threads(args.threads):
        result = vector_eval(args.encoder, args.dataset, args.output, split=args.split, max_length=args.max_length,
                             dtype=args.dtype, batch_size=args.batch_size)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
