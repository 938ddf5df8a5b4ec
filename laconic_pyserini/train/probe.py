"""A one-minute check of a model in training, on training queries only (for choosing settings without looking at
a test set).

    python -m laconic_pyserini.train.probe --encoder SPEC_OR_FOLDER [--dataset scifact] [--split train]
        [--queries 150] [--pool 500] [--center-head] [--causal] [--logit-offset X] [--output FILE.jsonl]

``--queries`` judged queries of the split (a seeded sample), ranked against a pool of ``--pool`` documents: their
judged documents plus seeded random others. Documents are cut at 64 tokens and encoded in bf16 (as
:mod:`.vector_eval` does). The output is MRR@10 and R@10, for the top-512 impacts (what the index holds) and for
the full float vectors (what the loss sees). A random ranking of a 500-document pool gives MRR@10 ≈ 0.006.

``--center-head``, ``--causal`` and ``--logit-offset`` change the backbone as loaded, to see what a setting would
start from: the LM head centred (:mod:`..modeling.head_centering`), left-to-right attention instead of
bidirectional, or another constant subtracted from the pooled logits (the spec's ``logit_offset``).

This is a pool, not a whole corpus: use it to compare settings, and :mod:`.vector_eval` for numbers to report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import cli, require_at_least


def probe(encoder: str, *, dataset: str = "scifact", split: str = "train", queries: int = 150, pool: int = 500,
          center_head: bool = False, causal: bool = False, logit_offset: float | None = None, max_length: int = 64,
          seed: int = 0, dtype: str = "auto") -> dict:
    import torch

    from ..data import iter_corpus, resolve_dataset
    from ..topics import load_qrels, load_topics
    from ..modeling import load_sparse_encoder
    from ..spec import load_spec
    from .vector_eval import index_impacts

    folder = resolve_dataset(dataset)
    topics, qrels = load_topics(folder, split), load_qrels(folder, split)
    docs = {d.id: d for d in iter_corpus(folder)}
    # Only queries with a relevant document in the corpus: the others have no MRR or recall to measure.
    qids = sorted(q for q in topics if any(grade > 0 and d in docs for d, grade in qrels.get(q, {}).items()))
    random.Random(seed).shuffle(qids)
    qids = qids[:queries]
    relevant = {q: {d for d, grade in qrels[q].items() if grade > 0 and d in docs} for q in qids}
    judged = sorted(set().union(*relevant.values()))
    others = sorted(set(docs) - set(judged))
    random.Random(seed + 1).shuffle(others)
    doc_ids = sorted(judged + others[:max(0, pool - len(judged))], key=lambda d: len(docs[d].contents))

    spec = load_spec(encoder, max_length=max_length)
    if causal:
        spec = dataclasses.replace(spec, bidirectional=False)
    if logit_offset is not None:
        spec = dataclasses.replace(spec, logit_offset=logit_offset)
    started = time.perf_counter()
    # A centred head is changed after loading, so no bf16 copy of it may be screened with.
    model = load_sparse_encoder(spec, dtype=dtype, screen="auto" if not center_head else False)
    if center_head:
        from ..modeling.head_centering import center_lm_head

        center_lm_head(model.model)
    matrix = torch.cat([model.encode_weights([spec.document_text("", docs[d].contents) for d in doc_ids[i:i + 32]],
                                            full=True)
                        for i in range(0, len(doc_ids), 32)])
    query_weights = model.encode_weights([spec.query_text(topics[q]) for q in qids], full=True)
    result = {"encoder": encoder, "dataset": dataset, "split": split, "queries": len(qids), "pool": len(doc_ids),
              "center_head": center_head, "causal": causal, "logit_offset": spec.logit_offset,
              "kernels": model.kernels}
    for name, (q, d) in {"impact": (index_impacts(query_weights, spec), index_impacts(matrix, spec)),
                         "full": (query_weights.double(), matrix.double())}.items():
        top = (q @ d.T).topk(10, dim=1).indices.tolist()
        rr, recall = [], []
        for row, qid in enumerate(qids):
            ranked = [doc_ids[j] for j in top[row]]
            rr.append(next((1 / (rank + 1) for rank, d_id in enumerate(ranked) if d_id in relevant[qid]), 0.0))
            recall.append(len(relevant[qid] & set(ranked)) / len(relevant[qid]))
        result[name] = {"MRR@10": round(sum(rr) / len(rr), 4), "R@10": round(sum(recall) / len(recall), 4)}
    result["nonzero_query_terms"] = float((query_weights > 0).sum(1).float().mean())
    result["nonzero_doc_terms"] = float((matrix > 0).sum(1).float().mean())
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


@cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.train.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", required=True, help="spec name, hub id or model folder (a training output)")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--split", default="train")
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--pool", type=int, default=500)
    parser.add_argument("--center-head", action="store_true", help="centre the LM head as loaded")
    parser.add_argument("--causal", action="store_true", help="left-to-right attention instead of bidirectional")
    parser.add_argument("--logit-offset", type=float, default=None,
                        help="subtract this from every pooled logit (default: the encoder spec's logit_offset)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto: bf16 where this CPU runs bf16 fast, else fp32")
    parser.add_argument("--output", default=None, help="append the result as one JSON line to this file")
    args = parser.parse_args(argv)
    require_at_least(1, {"--queries": args.queries, "--pool": args.pool})
    result = probe(args.encoder, dataset=args.dataset, split=args.split, queries=args.queries, pool=args.pool,
                   center_head=args.center_head, causal=args.causal, logit_offset=args.logit_offset,
                   dtype=args.dtype)
    line = json.dumps(result)
    print(line)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
