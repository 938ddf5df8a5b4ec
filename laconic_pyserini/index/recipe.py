"""Index recipes: encode one dataset with one encoder, index it, and check the document count.

A recipe is not a file of its own: it is one (condition, dataset) cell of a reproduction recipe in ``eval/*.yaml``,
which already names the dataset, the encoder (the condition's ``encoder`` variable) and the corpus size (the
dataset's ``documents``)::

    python -m laconic_pyserini.index --recipe eval/beir.yaml --condition splade-tiny --dataset scifact \\
        [--work DIR] [--device cuda] [--threads N]

The encoding goes to ``WORK/encoded/NAME`` and the index to ``WORK/indexes/NAME`` (``NAME`` = ``DATASET.CONDITION``).
Both steps resume: a complete encoding is not redone, an interrupted one continues, and an index that already
matches its encoding is kept. BEIR Quora and CQADupStack documents take the query prefix, decided from the
dataset's name (:func:`laconic_pyserini.encode.source.resolve_docs_as_queries`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .manifest import IndexFolderError, read_index_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexRecipe:
    """What to encode with what, how many documents the index must hold, and the encode / index options."""

    name: str
    dataset: str                 # BEIR folder, name under $LACONIC_DATA, or ir_datasets id
    encoder: str                 # spec name, model folder or hub id
    documents: int
    encode: dict = field(default_factory=dict)   # encode_corpus / encode_dense_corpus options (batch_size, ...)
    spec: dict = field(default_factory=dict)     # load_spec options (tokenizer, max_length)
    index: dict = field(default_factory=dict)    # build options (threads, ...)


def run_recipe(recipe: IndexRecipe, work: str | os.PathLike = "work", *, threads: int | None = None,
               device: str | None = None) -> Path:
    """Encode and index one recipe under ``work``; returns the index folder. ``device`` overrides the recipe's.

    A sparse encoder makes a Lucene impact index, a dense one a faiss folder.
    """
    from ..spec import load_spec

    work = Path(work)
    index_dir = work / "indexes" / recipe.name
    encode_options = dict(recipe.encode, **({"device": device} if device else {}))
    index_options = dict(recipe.index, **({"threads": threads} if threads else {}))
    spec = load_spec(recipe.encoder, **recipe.spec)
    logger.info("recipe %s: encode %s with %s", recipe.name, recipe.dataset, spec.name)
    if spec.kind == "dense":
        _dense(recipe, spec, index_dir, encode_options)
    else:
        _sparse(recipe, spec, work / "encoded" / recipe.name, index_dir, encode_options, index_options)
    documents = read_index_manifest(index_dir)["documents"]
    if documents != recipe.documents:
        raise IndexFolderError(f"recipe {recipe.name}: {index_dir} holds {documents} documents, the recipe expects "
                               f"{recipe.documents}; check the dataset (and any skipped invalid lines)")
    logger.info("recipe %s: OK, %d documents in %s", recipe.name, documents, index_dir)
    return index_dir


def _dense(recipe: IndexRecipe, spec, index_dir: Path, encode_options: dict) -> None:
    from ..encode.dense import encode_dense_corpus

    try:
        existing = read_index_manifest(index_dir)
    except IndexFolderError:
        existing = None
    if existing is not None and existing.get("spec") == spec.to_dict() and \
            existing.get("documents") == recipe.documents:
        logger.info("recipe %s: %s already holds this encoding", recipe.name, index_dir)
        return
    encode_dense_corpus(recipe.dataset, spec, index_dir, **encode_options)


def _sparse(recipe: IndexRecipe, spec, encoded_dir: Path, index_dir: Path, encode_options: dict,
            index_options: dict) -> None:
    from ..encode import encode_corpus, read_manifest
    from .impact import build_impact_index

    encode_corpus(recipe.dataset, encoded_dir, spec, **encode_options)
    encoding = read_manifest(encoded_dir)
    if encoding.documents != recipe.documents:
        raise IndexFolderError(f"recipe {recipe.name}: {encoded_dir} holds {encoding.documents} documents, the "
                               f"recipe expects {recipe.documents}; check the dataset (and any skipped invalid lines)")
    try:
        existing = read_index_manifest(index_dir)
    except IndexFolderError:
        existing = None
    if existing is not None and existing.get("encoded") == str(encoded_dir.resolve()) and \
            existing.get("documents") == encoding.documents and existing.get("spec") == encoding.spec:
        logger.info("recipe %s: %s already indexes this encoding", recipe.name, index_dir)
        return
    build_impact_index(encoded_dir, index_dir, **index_options)
