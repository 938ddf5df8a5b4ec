"""Evaluation with ir_measures (pytrec_eval underneath), with trec_eval ``-c`` semantics.

``-c``: a judged query (one with at least one relevant document) that the run does not answer counts as zero,
instead of silently shrinking the denominator. CLI::

    python -m laconic_pyserini.eval --qrels BEIR_DIR_OR_NAME [--split test] --run RUN [-m nDCG@10 R@100 R@1000]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .errors import DataError, UsageError, cli
from .run import Run, read_trec_run
from .topics import load_qrels

DEFAULT_MEASURES = ("nDCG@10", "R@100", "R@1000")


def per_query(qrels: dict[str, dict[str, int]], run: Run, measures: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{measure: {query_id: value}}`` for every judged query, zero-filled for queries the run misses."""
    import ir_measures

    parsed = parse_measures(measures)
    qrel_rows = [ir_measures.Qrel(q, d, g) for q, docs in qrels.items() for d, g in docs.items()]
    run_rows = [ir_measures.ScoredDoc(q, d, s) for q, hits in run.items() if q in qrels for d, s in hits]
    values: dict[str, dict[str, float]] = {str(m): {} for m in parsed}
    for metric in ir_measures.iter_calc(parsed, qrel_rows, run_rows):
        values[str(metric.measure)][metric.query_id] = float(metric.value)
    judged = [q for q, docs in qrels.items() if any(g > 0 for g in docs.values())]
    for name in values:
        for query_id in judged:
            values[name].setdefault(query_id, 0.0)
    return {name: values[str(m)] for name, m in zip(measures, parsed)}


def parse_measures(measures: Sequence[str]) -> list:
    """ir_measures objects for these names; an unknown name is a UsageError listing the valid ones."""
    import difflib

    import ir_measures

    parsed = []
    for name in measures:
        try:
            parsed.append(ir_measures.parse_measure(name))
        except (NameError, ValueError, TypeError) as exc:
            known = sorted(ir_measures.measures.registry)
            base = name.split("@", 1)[0].split("(", 1)[0]
            close = difflib.get_close_matches(base, known, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}{name[len(base):]}? " if close else ""
            raise UsageError(f"-m {name}: not an ir_measures measure ({exc}); {hint}"
                             f"valid measures: {', '.join(known)} (e.g. nDCG@10 R@100 RR@10 MAP)") from None
        cutoff = parsed[-1].params.get("cutoff")
        if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 1):
            raise UsageError(f"-m {name}: the cutoff after @ must be a positive integer "
                             f"(e.g. {name.split('@', 1)[0]}@10)")
    return parsed


def evaluate(qrels: dict[str, dict[str, int]], run: Run, measures: Sequence[str] = DEFAULT_MEASURES) -> dict[str, float]:
    """Mean of each measure over the judged queries (trec_eval -c)."""
    out = {}
    for name, by_query in per_query(qrels, run, measures).items():
        out[name] = sum(by_query.values()) / len(by_query) if by_query else 0.0
    return out


def evaluate_run_file(qrels_source: str | os.PathLike, run_path: str | os.PathLike, split: str = "test",
                      measures: Sequence[str] = DEFAULT_MEASURES) -> dict[str, float]:
    run = read_trec_run(run_path)
    if not run:
        raise DataError(run_path, None, "the run has no lines", "evaluate the run a search wrote")
    return evaluate(load_qrels(qrels_source, split), run, measures)


@cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qrels", required=True, help="BEIR folder, dataset name, or a qrels TSV/TREC file")
    parser.add_argument("--split", default="test")
    parser.add_argument("--run", required=True, help="TREC run file")
    parser.add_argument("-m", "--measures", nargs="+", default=list(DEFAULT_MEASURES),
                        help="ir_measures names, e.g. nDCG@10 R@100 R@1000 RR@10 MAP")
    args = parser.parse_args(argv)
    parse_measures(args.measures)  # before reading the qrels and the run
    scores = evaluate_run_file(args.qrels, args.run, args.split, args.measures)
    for name, value in scores.items():
        print(f"{name}\t{value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
