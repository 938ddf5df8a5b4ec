"""Hard-negative mining with this toolkit's own index.

    python -m laconic_pyserini.train.mine --dataset BEIR_DIR_OR_NAME [--split train] --output NEGATIVES.jsonl
        (--index INDEX_DIR | --build-bm25 INDEX_DIR) [--depth 100] [--negatives 30] [--skip-top 0] [--threads N]

The judged queries of the split are searched against ``--index`` (any index ``laconic_pyserini.searchers`` opens:
BM25, or an impact index of a phase-1 model) or against a BM25 index built first into ``--build-bm25``. Each query
keeps its judged positives (grade > 0) and the top retrieved documents that are not judged positive as negatives
(judged non-relevant documents are genuine negatives and stay). The output is the phase-2 training file
(:mod:`.data` reads it): ``{"query_id", "query", "positives": [{"id","title","text"}], "negatives": [{"id","title",
"text","rank","score"}]}``, written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data import DataError, iter_corpus, resolve_dataset
from ..errors import cli, require_at_least
from ..outputs import atomic_open, claim_file
from ..topics import load_qrels, load_topics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiningStats:
    queries: int            # judged queries written
    skipped: int            # judged queries without a positive (all grades 0) or without any negative
    negatives: int          # negatives written in total
    excluded_positives: int  # retrieved documents dropped because they are judged positives
    output: Path


def select_negatives(hits: Sequence[tuple[str, float]], positives: set[str], *, negatives: int,
                     skip_top: int = 0) -> tuple[list[tuple[int, str, float]], int]:
    """(rank, doc id, score) of the first ``negatives`` hits that are not judged positives, after skipping the
    first ``skip_top`` ranks (the likeliest unjudged positives); also how many positives were passed over."""
    chosen, excluded = [], 0
    for rank, (doc_id, score) in enumerate(hits, start=1):
        if doc_id in positives:
            excluded += 1
            continue
        if rank <= skip_top:
            continue
        chosen.append((rank, doc_id, score))
        if len(chosen) >= negatives:
            break
    return chosen, excluded


def _looks_mined(path: Path) -> bool:
    """An earlier output of this command: its first line is a (query, positives, negatives) row."""
    try:
        with open(path, encoding="utf-8") as f:
            row = json.loads(f.readline())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(row, dict) and {"query_id", "positives", "negatives"} <= set(row)


def mine_hard_negatives(dataset: str | os.PathLike, output: str | os.PathLike, *, index_dir: str | os.PathLike,
                        split: str = "train", depth: int = 100, negatives: int = 30, skip_top: int = 0,
                        threads: int = 1, max_queries: int | None = None) -> MiningStats:
    """Search the split's judged queries in ``index_dir`` and write (query, positives, negatives) JSONL."""
    from ..searchers import open_searcher

    claim_file(output, flag="--output", ours=_looks_mined)  # before the search, not after it
    qrels = load_qrels(dataset, split)
    topics = load_topics(dataset, split)
    if max_queries is not None:
        topics = dict(list(topics.items())[:max_queries])
    searcher = open_searcher(index_dir)
    run = searcher.batch_search(topics, depth, threads)

    rows, skipped, excluded_total = [], 0, 0
    needed: set[str] = set()
    for qid, text in topics.items():
        positives = {d for d, grade in qrels.get(qid, {}).items() if grade > 0}
        chosen, excluded = select_negatives(run.get(qid, []), positives, negatives=negatives, skip_top=skip_top)
        excluded_total += excluded
        if not positives or not chosen:
            skipped += 1
            continue
        rows.append((qid, text, sorted(positives), chosen))
        needed.update(positives)
        needed.update(doc_id for _, doc_id, _ in chosen)

    corpus_path = resolve_dataset(dataset)
    docs = {doc.id: doc for doc in iter_corpus(corpus_path) if doc.id in needed}
    missing = sorted(needed - set(docs))
    if missing:
        raise DataError(corpus_path, None, f"{len(missing)} judged or retrieved documents are not in the corpus "
                        f"(e.g. {missing[0]!r})", "the index and qrels must belong to this corpus")

    output = Path(output)
    written = 0
    with atomic_open(output) as f:
        for qid, text, positive_ids, chosen in rows:
            row = {"query_id": qid, "query": text,
                   "positives": [{"id": d, "title": docs[d].title, "text": docs[d].text} for d in positive_ids],
                   "negatives": [{"id": d, "title": docs[d].title, "text": docs[d].text, "rank": rank,
                                  "score": round(score, 4)} for rank, d, score in chosen]}
            written += len(chosen)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    logger.info("%d queries, %d negatives (%d judged positives excluded, %d queries skipped) -> %s",
                len(rows), written, excluded_total, skipped, output)
    return MiningStats(len(rows), skipped, written, excluded_total, output)


@cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.train.mine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="BEIR folder or dataset name (queries, qrels, corpus)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--output", required=True, help="JSONL of (query, positives, negatives) to write")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", help="an existing index folder (BM25, or an impact index of a phase-1 model)")
    where.add_argument("--build-bm25", metavar="INDEX_DIR", help="build a BM25 index of the corpus here first "
                       "(reused when it already exists)")
    parser.add_argument("--depth", type=int, default=100, help="hits retrieved per query")
    parser.add_argument("--negatives", type=int, default=30, help="negatives kept per query")
    parser.add_argument("--skip-top", type=int, default=0, help="ranks skipped before taking negatives")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    require_at_least(1, {"--depth": args.depth, "--negatives": args.negatives, "--threads": args.threads,
                         "--max-queries": args.max_queries})
    require_at_least(0, {"--skip-top": args.skip_top})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from ..index.lucene import build_bm25_index

    index_dir = args.index
    if args.build_bm25:
        index_dir = args.build_bm25
        if not (Path(index_dir) / "manifest.json").exists():
            build_bm25_index(args.dataset, index_dir, threads=args.threads)
    stats = mine_hard_negatives(args.dataset, args.output, index_dir=index_dir, split=args.split,
                                depth=args.depth, negatives=args.negatives, skip_top=args.skip_top,
                                threads=args.threads, max_queries=args.max_queries)
    print(f"{stats.output}\t{stats.queries} queries\t{stats.negatives} negatives\t{stats.skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
