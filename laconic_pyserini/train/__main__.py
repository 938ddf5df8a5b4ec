"""Train one phase of the LACONIC curriculum.

    python -m laconic_pyserini.train --config CONFIG.yaml [--set train.max_steps=100 ...] [--stop-after-steps N]
    python -m laconic_pyserini.train --config CONFIG.yaml --export-step N [--export-to DIR]   # an earlier checkpoint
    torchrun --nproc-per-node 8 -m laconic_pyserini.train --config CONFIG.yaml        # several GPUs / nodes

A rerun of the same command resumes from the newest checkpoint in ``train.output_dir``. The trained encoder is
written to ``OUTPUT_DIR/final`` and loads with ``python -m laconic_pyserini.encode --encoder OUTPUT_DIR/final``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import cli, require_at_least


def _value(text: str):
    import yaml

    return yaml.safe_load(text)


@cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML training config (see laconic_pyserini/train/configs)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (YAML syntax), e.g. train.max_steps=100")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="checkpoint and stop after this many steps of this invocation (rerun to continue)")
    parser.add_argument("--export-step", type=int, default=None,
                        help="write the encoder of this step's checkpoint (early stopping) instead of training; "
                             "0 = the model training starts from (the untrained baseline)")
    parser.add_argument("--export-to", default=None,
                        help="--export-step: output folder (default OUTPUT_DIR/step-N-final)")
    args = parser.parse_args(argv)
    require_at_least(1, {"--stop-after-steps": args.stop_after_steps})
    require_at_least(0, {"--export-step": args.export_step})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from .config import load_config

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: use SECTION.KEY=VALUE")
        overrides[key] = _value(value)
    config = load_config(args.config, overrides)
    from .loop import export_checkpoint, train

    if args.export_step is not None:
        out = export_checkpoint(config, args.export_step, args.export_to)
    else:
        out = train(config, stop_after=args.stop_after_steps)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
