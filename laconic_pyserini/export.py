"""Export an encoder for another library's API (sentence-transformers' SparseEncoder).

``python -m laconic_pyserini.export sentence-transformers --encoder SPEC_OR_PATH [--tokenizer PATH] --output DIR``
writes an encoder as a folder that sentence-transformers' ``SparseEncoder`` opens (see
:mod:`laconic_pyserini.integrations.st_export`); a thin shell over
:func:`~laconic_pyserini.integrations.st_export.export_sentence_transformers`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .errors import cli

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.export", description=__doc__.split("\n\n")[0])
    targets = parser.add_subparsers(dest="target", required=True)
    st = targets.add_parser("sentence-transformers", help="a sentence-transformers SparseEncoder folder")
    st.add_argument("--encoder", required=True, help="spec name, hub id or local model folder")
    st.add_argument("--tokenizer", help="tokenizer location, replacing the spec's")
    st.add_argument("--output", required=True, help="a new folder (or this command's own earlier output)")
    return parser


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .integrations.st_export import export_sentence_transformers

    output = export_sentence_transformers(args.encoder, args.output, tokenizer=args.tokenizer)
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
