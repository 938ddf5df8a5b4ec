"""Fuse TREC runs into one, as ``python -m pyserini.fusion`` does.

    python -m laconic_pyserini.fuse --runs RUN RUN [RUN ...] --method rrf|interpolation|average|normalize
        [--rrf.k 60] [--alpha 0.5] [--depth 1000] [--k 1000] [--runtag laconic.fusion] --output RUN

The arithmetic, tie order and defaults are pyserini 1.6's (:mod:`laconic_pyserini.fusion`), and scores are
written in full (the shortest text that reads back as the same float), as pyserini writes them. A run's ranks must
read 1, 2, 3, ... in file order (pyserini's RRF reads the rank column while ``--depth`` counts lines, so a run
whose ranks say otherwise would be fused by two different orders; it is refused here). ``RUN.manifest.json``
records the inputs and the settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import cli, require_at_least, require_output_file
from .fusion import DEFAULT_ALPHA, DEFAULT_DEPTH, DEFAULT_K, DEFAULT_RRF_K, METHODS, FusionSettings, fuse
from .outputs import claim_file, write_json_atomic
from .run import looks_like_run, read_trec_run, write_trec_run

#: The tag column of a fused run unless ``--runtag`` says otherwise.
DEFAULT_TAG = "laconic.fusion"


def fuse_run_files(runs: Sequence[str | Path], output: str | Path, settings: FusionSettings = FusionSettings(),
                   *, tag: str = DEFAULT_TAG) -> Path:
    """Read ``runs``, fuse them, write ``output`` (exact scores) and ``output.manifest.json``; returns ``output``.

    ``output`` may replace an earlier run, never one of the inputs or a file that is not a run.
    """
    claim_file(output, flag="--output", ours=looks_like_run, inputs=runs)
    fused = fuse([read_trec_run(path, ranks_in_order=True) for path in runs], settings)
    write_trec_run(fused, output, tag, exact_scores=True)
    write_json_atomic(f"{output}.manifest.json", {
        "format": "laconic-pyserini/run", "run": str(output), "fusion": settings.to_dict(),
        "runs": [str(path) for path in runs]})
    return Path(output)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.fuse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="TREC runs to fuse (at least 2)")
    parser.add_argument("--output", required=True, help="fused TREC run to write")
    parser.add_argument("--method", choices=METHODS, default="rrf", help="fusion method (default rrf)")
    add_fusion_options(parser)
    parser.add_argument("--k", type=int, default=DEFAULT_K, help=f"hits kept per query (default {DEFAULT_K})")
    parser.add_argument("--runtag", default=DEFAULT_TAG, help=f"the run's tag column (default {DEFAULT_TAG})")
    return parser


def add_fusion_options(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """``--rrf.k``, ``--alpha`` and ``--depth``, as pyserini's fusion CLI spells them; ``defaults=False`` leaves
    them None when not given (search tells a flag given from one left out)."""
    parser.add_argument("--rrf.k", dest="rrf_k", type=int, default=DEFAULT_RRF_K if defaults else None,
                        help=f"RRF's k: 1 / (k + rank) (default {DEFAULT_RRF_K})")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA if defaults else None,
                        help=f"interpolation: weight of the first run, 1 - alpha of the second (default "
                             f"{DEFAULT_ALPHA})")
    parser.add_argument("--depth", type=int, default=None,
                        help=f"hits of each run considered per query (default {DEFAULT_DEPTH}; search: the hits "
                             "it fetches)")


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    require_at_least(0, {"--rrf.k": args.rrf_k})
    require_at_least(1, {"--depth": args.depth, "--k": args.k})
    require_at_least(2, {"number of --runs": len(args.runs)})
    require_output_file("--output", args.output)
    depth = DEFAULT_DEPTH if args.depth is None else args.depth
    settings = FusionSettings(args.method, args.rrf_k, args.alpha, depth, args.k)
    fuse_run_files(args.runs, args.output, settings, tag=args.runtag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
