"""Anserini index builds, run through the JVM in-process.

BM25 (issue: foundation)::

    python -m laconic_pyserini.index --bm25 --input BEIR_DIR_OR_NAME --index DIR [--fields flat|multifield] [--threads N]

``flat`` joins title and text into ``contents`` (Anserini's BeirFlatCollection); ``multifield`` keeps ``title`` as
its own field (BeirMultifieldCollection) and searches ``contents`` and ``title`` with weight 1 each.

Impact (learned sparse vectors written by ``python -m laconic_pyserini.encode``)::

    python -m laconic_pyserini.index --input ENCODED_DIR --index DIR [--threads N] [--optimize] [--no-store-raw]

An index recipe (``index_recipes/NAME.yaml``, one per index kind and encoder): encode the dataset as the recipe
says, index it, and check the dataset's document count (:mod:`laconic_pyserini.index.recipe_build`)::

    python -m laconic_pyserini.index --recipe index_recipes/splade-tiny.yaml --dataset scifact [--work DIR]
        [--device cuda] [--dtype auto] [--encode-batch-size 32] [--threads N]

``--dataset`` is a dataset of ``eval/*.yaml`` (its corpus size is then checked) or anything the encoders read.
The index recipe of a reproduction condition is reached through it too:
``--recipe eval/beir.yaml --condition splade-tiny --dataset scifact``.

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
from pathlib import Path

from ..encode.settings import InferenceSettings
from ..errors import UsageError, cli, require_at_least
from .impact import build_impact_index
from .lucene import FIELDS, LOG_FILE, build_bm25_index
from .manifest import read_index_manifest
from .milvus_uri import is_milvus_uri
from ..shipped import recipes_dir
from .recipe import IndexRecipe, load_index_recipe, recipe_path
from .recipe_build import BuildSettings, Target, build_recipe


def recipe_and_target(path: str | os.PathLike, dataset: str, condition: str | None = None,
                      ) -> tuple[IndexRecipe, Target, dict[str, str]]:
    """The index recipe at ``path`` (or, with ``condition``, the one that condition of the reproduction recipe at
    ``path`` names), the dataset it is built for, and the reproduction recipe's variables (batch size, device ...)
    where there is one."""
    from ..recipe import RecipeError, load_recipe

    if condition is None:
        return load_index_recipe(path), dataset_target(dataset), {}
    recipe = load_recipe(path)
    recipe.expand_conditions([condition])
    recipe.expand_datasets([dataset])
    cell_condition, cell_dataset = recipe.conditions[condition], recipe.datasets.get(dataset)
    if cell_dataset is None:  # a group name: an index is one corpus
        raise RecipeError(f"{path}: {dataset!r} is a group; name one of its datasets")
    if cell_condition.index is None:
        raise RecipeError(f"{path}: condition {condition!r} names no index recipe ('index: NAME' of "
                          "index_recipes/); build its index with the commands of its steps")
    variables = recipe.variables(cell_condition, cell_dataset, work="")
    target = Target(dataset, cell_dataset.data, cell_dataset.documents)
    return load_index_recipe(recipe_path(cell_condition.index)), target, variables


def dataset_target(name: str) -> Target:
    """A dataset of ``eval/*.yaml`` by its short name (what the CLIs read, its corpus size), else ``name`` itself
    as the data (any dataset name, folder or corpus file the encoders read; its size is not checked)."""
    from ..recipe import load_recipe

    for path in sorted(recipes_dir().glob("*.yaml")):
        found = load_recipe(path).datasets.get(name)
        if found is not None:
            return Target(name, found.data, found.documents)
    return Target(Path(name).name.removesuffix(".jsonl"), name)


def _build_settings(args, variables: dict[str, str]) -> BuildSettings:
    inference = InferenceSettings(batch_size=args.encode_batch_size or int(variables.get("batch_size", 32)),
                                  device=args.device or variables.get("device", "cpu"),
                                  dtype=args.dtype or variables.get("dtype") or "auto")
    threads = args.threads or int(variables.get("threads", 2))
    return BuildSettings(work=Path(args.work), inference=inference, threads=threads, uri=args.index)


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
    parser.add_argument("--recipe", help="an index recipe (index_recipes/NAME.yaml): encode, index, check the count")
    parser.add_argument("--dataset", help="--recipe: the dataset to index (e.g. scifact)")
    parser.add_argument("--condition", help="--recipe eval/*.yaml: the condition whose index recipe is used")
    parser.add_argument("--work", default="work", help="--recipe: folder for the encoding and the index")
    parser.add_argument("--device", default=None, help="--recipe: encoding device (default cpu)")
    parser.add_argument("--dtype", default=None, choices=("auto", "fp32", "bf16", "fp16"),
                        help="--recipe: encoding dtype (default auto)")
    parser.add_argument("--encode-batch-size", type=int, default=None, help="--recipe: encoding batch size (32)")
    from .milvus import add_arguments as add_milvus_arguments

    add_milvus_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.recipe is None and (args.input is None or args.index is None):
        parser.error("--input and --index are required (or --recipe)")
    if args.recipe is not None and args.dataset is None:
        parser.error("--recipe takes --dataset (and, for a reproduction recipe eval/*.yaml, --condition)")
    require_at_least(1, {"--threads": args.threads, "--encode-batch-size": args.encode_batch_size})
    if args.recipe:
        recipe, target, variables = recipe_and_target(args.recipe, args.dataset, args.condition)
        if args.index is not None and recipe.kind != "milvus":
            raise UsageError(f"--index with --recipe is a Milvus recipe's address; {recipe.name} builds its index "
                             f"under --work {args.work}")
        where = build_recipe(recipe, target, _build_settings(args, variables))
        if recipe.kind in ("milvus", "seismic"):
            print(f"{where}\t{recipe.kind} index of {target.name}")
            return 0
        path = Path(where)
    elif is_milvus_uri(args.index):  # any case of the scheme; a local folder named milvus* stays local
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
