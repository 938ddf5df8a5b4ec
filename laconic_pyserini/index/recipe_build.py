"""Build an index recipe (:mod:`laconic_pyserini.index.recipe`) for one dataset, in this process::

    python -m laconic_pyserini.index --recipe index_recipes/splade-tiny.yaml --dataset scifact [--work DIR]

The encoding goes to ``WORK/encoded/DATASET.NAME`` and the index to ``WORK/indexes/DATASET.NAME`` (``NAME``: the
recipe that encodes, so a Seismic or Milvus recipe shares its base's encoding and Lucene index; a Seismic index
is ``seismic/`` inside that index folder). Every step resumes: a complete encoding is not redone, an interrupted
one continues, and an index that already matches its encoding is kept. Where the dataset's corpus size is known
(the ``documents`` of its entry in ``eval/*.yaml``), the index must hold exactly that many documents.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..encode.settings import InferenceSettings
from .manifest import IndexFolderError, read_index_manifest
from .recipe import IndexRecipe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """The dataset a recipe is built for: its short name, what the CLIs read, and its corpus size if known."""

    name: str
    data: str
    documents: int | None = None


@dataclass(frozen=True)
class BuildSettings:
    """Where and how fast: none of these changes the index."""

    work: Path = Path("work")
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    threads: int = 2
    uri: str | None = None  # a Milvus recipe's address, instead of the recipe's own


def build_recipe(recipe: IndexRecipe, target: Target, settings: BuildSettings = BuildSettings()) -> str:
    """Build ``recipe`` for ``target``; returns where the index is (a folder, or a Milvus address)."""
    work = Path(settings.work)
    index_dir = work / "indexes" / f"{target.name}.{recipe.source.name}"
    if recipe.kind == "bm25":
        from .lucene import build_bm25_index

        index_dir = work / "indexes" / f"{target.name}.{recipe.name}"
        build_bm25_index(target.data, index_dir, fields=recipe.fields, threads=settings.threads)
    elif recipe.source.kind == "faiss":
        _dense(recipe.source, target, index_dir, settings.inference)
    else:
        _sparse(recipe.source, target, work / "encoded" / f"{target.name}.{recipe.source.name}", index_dir,
                settings)
    _check_count(recipe, target, index_dir)
    if recipe.kind == "seismic":
        from .seismic import build_seismic_index

        return str(build_seismic_index(index_dir, **recipe.options["build"]))
    if recipe.kind == "milvus":
        return _milvus(recipe, target, index_dir, work, settings.uri)
    return str(index_dir)


def _check_count(recipe: IndexRecipe, target: Target, index_dir: Path) -> None:
    documents = read_index_manifest(index_dir)["documents"]
    if target.documents is not None and documents != target.documents:
        raise IndexFolderError(f"recipe {recipe.name}: {index_dir} holds {documents} documents, {target.name} has "
                               f"{target.documents}; check the dataset (and any skipped invalid lines)")
    logger.info("recipe %s: %d documents in %s", recipe.name, documents, index_dir)


def _existing(index_dir: Path) -> dict | None:
    try:
        return read_index_manifest(index_dir)
    except IndexFolderError:
        return None


def _dense(recipe: IndexRecipe, target: Target, index_dir: Path, inference: InferenceSettings) -> None:
    from ..encode.dense import encode_dense_corpus
    from ..spec import load_spec

    spec = load_spec(recipe.encoder, **recipe.spec)
    existing = _existing(index_dir)
    if existing is not None and existing.get("spec") == spec.to_dict() and \
            target.documents in (None, existing.get("documents")):
        logger.info("recipe %s: %s already holds this encoding", recipe.name, index_dir)
        return
    encode_dense_corpus(target.data, spec, index_dir, batch_size=inference.batch_size, device=inference.device,
                        dtype=inference.dtype, **recipe.options)


def _sparse(recipe: IndexRecipe, target: Target, encoded_dir: Path, index_dir: Path,
            settings: BuildSettings) -> None:
    from ..encode import encode_corpus, read_manifest
    from ..spec import load_spec
    from .impact import build_impact_index

    spec = load_spec(recipe.encoder, **recipe.spec)
    encode_corpus(target.data, encoded_dir, spec, settings=recipe.encode, inference=settings.inference)
    encoding = read_manifest(encoded_dir)
    if target.documents is not None and encoding.documents != target.documents:
        raise IndexFolderError(f"recipe {recipe.name}: {encoded_dir} holds {encoding.documents} documents, "
                               f"{target.name} has {target.documents}; check the dataset (and any skipped invalid "
                               "lines)")
    existing = _existing(index_dir)
    if existing is not None and existing.get("encoded") == str(encoded_dir.resolve()) and \
            existing.get("documents") == encoding.documents and existing.get("spec") == encoding.spec:
        logger.info("recipe %s: %s already indexes this encoding", recipe.name, index_dir)
        return
    build_impact_index(encoded_dir, index_dir, threads=settings.threads, optimize=recipe.options["optimize"])


def _milvus(recipe: IndexRecipe, target: Target, index_dir: Path, work: Path, uri: str | None) -> str:
    from .milvus import export_to_milvus

    collection = re.sub(r"[^A-Za-z0-9_]", "_", f"{target.name}_{recipe.source.name}")
    uri = uri or recipe.options["uri"].replace("${collection}", collection)
    source = index_dir if recipe.source.kind == "faiss" else work / "encoded" / f"{target.name}.{recipe.source.name}"
    export_to_milvus(source, uri, index_type=recipe.options.get("milvus_index"))
    return uri
