"""Index recipes: one YAML file per (dataset, encoder) that encodes a corpus, indexes it and checks the count.

::

    python -m laconic_pyserini.index --recipe index_recipes/scifact.splade-tiny.yaml [--work DIR] [--device cuda]

A recipe (see ``docs/indexing.md``)::

    dataset: scifact            # BEIR folder, name under $LACONIC_DATA, or ir_datasets id (beir/cqadupstack/android)
    encoder: splade-tiny        # spec name (encoders/*.yaml), model folder or hub id
    documents: 5183             # the corpus size: the built index must hold exactly this many documents
    encode: {batch_size: 32}    # optional encode_corpus options: batch_size, device, dtype, docs_as_queries, fields
    index: {threads: 2}         # optional: threads, optimize

The encoding goes to ``WORK/encoded/NAME`` and the index to ``WORK/indexes/NAME`` (``NAME`` = the recipe's file
stem). Both steps resume: a complete encoding is not redone, an interrupted one continues, and an index that
already matches its encoding is kept.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..yaml_file import read_yaml_mapping

logger = logging.getLogger(__name__)

KEYS = {"dataset", "encoder", "documents", "encode", "index", "description"}
ENCODE_KEYS = {"batch_size", "device", "dtype", "docs_as_queries", "fields"}
INDEX_KEYS = {"threads", "optimize"}


class RecipeError(ValueError):
    """A recipe that cannot be run as written, or whose result differs from what it promises."""


def load_recipe(path: str | os.PathLike) -> dict:
    """A recipe's fields, checked (unknown keys are errors: a typo must not silently change a run)."""
    path = Path(path)
    recipe = read_yaml_mapping(path, RecipeError, missing="the shipped index recipes are in index_recipes/",
                               shape="dataset, encoder and documents")
    problems = []
    unknown = sorted(set(recipe) - KEYS)
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})")
    for key in ("dataset", "encoder"):
        if not isinstance(recipe.get(key), str) or not recipe[key]:
            problems.append(f"{key} must be a non-empty string")
    if not isinstance(recipe.get("documents"), int) or recipe["documents"] < 1:
        problems.append("documents must be the corpus size, a positive integer")
    for section, known in (("encode", ENCODE_KEYS), ("index", INDEX_KEYS)):
        value = recipe.get(section) or {}
        if not isinstance(value, dict):
            problems.append(f"{section} must be a mapping")
            continue
        bad = sorted(set(value) - known)
        if bad:
            problems.append(f"{section}: unknown option(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
        recipe[section] = value
    if problems:
        raise RecipeError(f"{path}: " + "; ".join(problems))
    recipe["name"] = path.name.removesuffix(".yaml").removesuffix(".yml")
    return recipe


def run_recipe(path: str | os.PathLike, work: str | os.PathLike = "work", *, threads: int | None = None,
               device: str | None = None) -> Path:
    """Encode and index one recipe under ``work``; returns the index folder. ``device`` overrides the recipe's."""
    from ..encode import encode_corpus, read_manifest
    from .impact import build_impact_index
    from .manifest import IndexFolderError, read_index_manifest

    recipe = load_recipe(path)
    work = Path(work)
    encoded_dir = work / "encoded" / recipe["name"]
    index_dir = work / "indexes" / recipe["name"]
    options = dict(recipe["encode"])
    if device is not None:
        options["device"] = device
    if "fields" in options:
        options["fields"] = tuple(options["fields"])
    logger.info("recipe %s: encode %s with %s -> %s", recipe["name"], recipe["dataset"], recipe["encoder"],
                encoded_dir)
    encode_corpus(recipe["dataset"], encoded_dir, recipe["encoder"], **options)
    encoding = read_manifest(encoded_dir)
    if encoding.documents != recipe["documents"]:
        raise RecipeError(f"{path}: {encoded_dir} holds {encoding.documents} documents, the recipe expects "
                          f"{recipe['documents']}; check the dataset (and any skipped invalid lines)")
    try:
        existing = read_index_manifest(index_dir)
    except IndexFolderError:
        existing = None
    if existing is not None and existing.get("encoded") == str(encoded_dir.resolve()) and \
            existing.get("documents") == encoding.documents and existing.get("spec") == encoding.spec:
        logger.info("recipe %s: %s already indexes this encoding", recipe["name"], index_dir)
    else:
        index_options = dict(recipe["index"])
        if threads is not None:
            index_options["threads"] = threads
        build_impact_index(encoded_dir, index_dir, **index_options)
    documents = read_index_manifest(index_dir)["documents"]
    if documents != recipe["documents"]:
        raise RecipeError(f"{path}: the index holds {documents} documents, the recipe expects {recipe['documents']}")
    logger.info("recipe %s: OK, %d documents in %s", recipe["name"], documents, index_dir)
    return index_dir
