"""Anserini index builds, run through the JVM in-process.

BM25 (issue: foundation)::

    python -m laconic_pyserini.index --bm25 --input BEIR_DIR_OR_NAME --index DIR [--fields flat|multifield] [--threads N]

``flat`` joins title and text into ``contents`` (Anserini's BeirFlatCollection); ``multifield`` keeps ``title`` as
its own field (BeirMultifieldCollection) and searches ``contents`` and ``title`` with weight 1 each.

Impact (learned sparse vectors written by ``python -m laconic_pyserini.encode``)::

    python -m laconic_pyserini.index --input ENCODED_DIR --index DIR [--threads N] [--optimize] [--no-store-raw]

A recipe: one (condition, dataset) cell of a reproduction recipe: encode the dataset with the condition's encoder,
index it, check the dataset's document count (:mod:`laconic_pyserini.index.recipe`)::

    python -m laconic_pyserini.index --recipe eval/beir.yaml --condition splade-tiny --dataset scifact [--work DIR]

What Anserini, Lucene and the JVM print goes to ``DIR/logs/index.log``; the console shows a bar on Anserini's
document counter (on a terminal) and the warnings that matter, once each.

Every index folder gets a ``manifest.json`` (what was indexed, with what, how many documents) that searchers read.
A build goes to ``.laconic-tmp-DIR`` and is swapped in when complete, so a crash never leaves a half index under
``DIR``. ``DIR`` must be new, empty, or an index of the same kind built here (rebuilding replaces it); any other
folder is refused, and so is an ``--index`` equal to, inside or containing the input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import cli, require_at_least
from .impact import build_impact_index
from .lucene import FIELDS, LOG_FILE, build_bm25_index
from .manifest import read_index_manifest
from .recipe import IndexRecipe


def index_recipe(path: str | os.PathLike, condition: str, dataset: str) -> IndexRecipe:
    """The index recipe of one cell of the reproduction recipe at ``path``: the dataset's data and corpus size, the
    condition's encoder, its encode step's options (a sparse encoder; a dense one takes the recipe's
    ``batch_size`` / ``device`` / ``dtype`` variables) and the ``threads`` variable."""
    from ..recipe import RecipeError, load_recipe

    recipe = load_recipe(path)
    recipe.expand_conditions([condition])
    recipe.expand_datasets([dataset])
    cell_condition, cell_dataset = recipe.conditions[condition], recipe.datasets.get(dataset)
    if cell_dataset is None:  # a group name: an index is one corpus
        raise RecipeError(f"{path}: {dataset!r} is a group; name one of its datasets")
    variables = recipe.variables(cell_condition, cell_dataset, work="")
    if not variables.get("encoder"):
        raise RecipeError(f"{path}: condition {condition!r} names no encoder; an index recipe encodes with one "
                          "(BM25 indexes: python -m laconic_pyserini.index --bm25)")
    if cell_dataset.documents is None:
        raise RecipeError(f"{path}: dataset {dataset!r} gives no 'documents' (its corpus size, which the index "
                          "must hold); add it to the dataset's entry")
    # A sparse condition's own encode command decides, parsed by the encode CLI's parser; else the variables.
    encode, spec = _sparse_encode_step(recipe, cell_condition, cell_dataset) or (_variable_options(variables), {})
    return IndexRecipe(name=f"{dataset}.{condition}", dataset=cell_dataset.data, encoder=variables["encoder"],
                       documents=cell_dataset.documents, encode=encode, spec=spec,
                       index={"threads": int(variables.get("threads", 2))})


def _variable_options(variables: dict) -> dict:
    encode = {"batch_size": int(variables.get("batch_size", 32)), "device": variables.get("device", "cpu")}
    if variables.get("dtype"):
        encode["dtype"] = variables["dtype"]
    return encode


def _sparse_encode_step(recipe, condition, dataset) -> tuple[dict, dict] | None:
    """``(encode_corpus options, load_spec options)`` of the condition's ``python -m laconic_pyserini.encode`` step
    (``--weights float``, ``--max-length 256``, ``--dtype`` ...), so that the index recipe encodes what the
    reproduction does; None when the condition has no such step (a dense encoder: the recipe's variables)."""
    import shlex

    from ..encode.__main__ import build_parser, strip_groups
    from ..recipe import RecipeError

    for step in condition.steps:
        words = shlex.split(recipe.render(step.command, condition, dataset, work="work"))
        if words[1:3] != ["-m", "laconic_pyserini.encode"]:
            continue
        parser = build_parser()
        parser.exit_on_error = False
        try:
            args = parser.parse_args(strip_groups(words[3:], parser))
        except (argparse.ArgumentError, SystemExit) as exc:
            raise RecipeError(f"{recipe.path}: condition {condition.name!r}: its encode step does not parse "
                              f"({exc}); fix the command") from None
        encode = {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype,
                  "quantize": args.quantize, "weights": args.weights, "fields": tuple(args.fields),
                  "docs_as_queries": args.docs_as_queries}
        return encode, {"tokenizer": args.tokenizer, "max_length": args.max_length}
    return None


@cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bm25", action="store_true", help="build a BM25 index of a BEIR corpus")
    parser.add_argument("--input", help="BEIR folder or dataset name (--bm25), or an encoded collection folder")
    parser.add_argument("--index", help="output index folder, or milvus://HOST:PORT/COLLECTION")
    parser.add_argument("--fields", choices=FIELDS, default="flat")
    parser.add_argument("--threads", type=int, default=None, help="indexing threads (default 2, or the recipe's)")
    parser.add_argument("--optimize", action="store_true", help="impact: merge the index into one segment")
    parser.add_argument("--no-store-raw", dest="store_raw", action="store_false",
                        help="impact: leave the documents' raw lines out of the index (smaller; doc() then reads "
                             "the corpus the manifest names)")
    parser.add_argument("--recipe", help="a reproduction recipe (eval/*.yaml): encode, index and check the count")
    parser.add_argument("--condition", help="--recipe: the condition whose encoder is used (e.g. splade-tiny)")
    parser.add_argument("--dataset", help="--recipe: the dataset to index (e.g. scifact)")
    parser.add_argument("--work", default="work", help="--recipe: folder for the encoding and the index")
    parser.add_argument("--device", default=None, help="--recipe: encoding device (overrides the recipe's)")
    from .milvus import add_arguments as add_milvus_arguments

    add_milvus_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.recipe is None and (args.input is None or args.index is None):
        parser.error("--input and --index are required (or --recipe)")
    if args.recipe is not None and (args.condition is None or args.dataset is None):
        parser.error("--recipe takes --condition and --dataset (see --list of python -m laconic_pyserini.reproduce)")
    require_at_least(1, {"--threads": args.threads})
    if args.recipe:
        from .recipe import run_recipe

        recipe = index_recipe(args.recipe, args.condition, args.dataset)
        path = run_recipe(recipe, args.work, threads=args.threads, device=args.device)
    elif args.index.startswith("milvus"):
        from .milvus import main_export

        return main_export(args)
    elif args.bm25:
        path = build_bm25_index(args.input, args.index, fields=args.fields, threads=args.threads or 2)
    else:
        path = build_impact_index(args.input, args.index, threads=args.threads or 2, optimize=args.optimize,
                                  store_raw=args.store_raw)
    manifest = read_index_manifest(path)
    print(f"{path}\t{manifest['documents']} documents")
    if (path / LOG_FILE).is_file():
        from ..console import say

        say(f"log: {path / LOG_FILE} (Anserini's and the JVM's output)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
