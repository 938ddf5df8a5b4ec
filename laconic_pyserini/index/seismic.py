"""Seismic indexes (``pyseismic-lsr``) built once beside an impact index, from the same encoded collection.

The build reads the encoded collection the Lucene index was built from (the path is in ``DIR/manifest.json``)
and writes ``DIR/seismic/``. Documents are stored as the collection holds them, as float32 values: the encoder's
float weights from a float collection (``encode --weights float``, as the LACONIC authors store documents), or the
integer impacts of an integer collection (then a Seismic score is the same dot product Lucene computes). The build
manifest records which (``weights``). Seismic 0.5 keeps document values in half precision: exact for impacts up to
2048; a float keeps 11 significant bits (finer than an impact's 1/100 for every weight below 20). Build knobs (``n_postings``, ``centroid_fraction``, ``summary_energy``, ...) are
Seismic's and default to its own defaults; a build with other knobs replaces the cached one. Terms are numbered
``0..V-1`` in sorted order (the mapping is ``DIR/seismic/vocabulary.json``); Seismic's standard index stores
component ids as 16-bit integers, so a collection with more than 65,536 distinct terms (Llama-3's 128,256-token
vocabulary) uses its large-vocabulary variant (``SeismicIndexLV``), chosen automatically. Searching is
:mod:`laconic_pyserini.searchers.seismic`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from ..fingerprint import FINGERPRINT_KEY
from ..outputs import building, swap_in
from .impact import read_impact_manifest
from .manifest import IndexFolderError, write_index_manifest

logger = logging.getLogger(__name__)

SUBDIR = "seismic"
KIND = "seismic"
INDEX_STEM = "index"  # Seismic appends .index.seismic
VOCABULARY = "vocabulary.json"
#: Seismic's standard index numbers components with u16.
STANDARD_MAX_TERMS = 1 << 16
#: Seismic 0.5's build defaults (its ``SeismicIndex.build_from_dataset`` signature).
BUILD_DEFAULTS = {"n_postings": 3500, "centroid_fraction": 0.1, "min_cluster_size": 2, "summary_energy": 0.4,
                  "max_fraction": 1.5, "doc_cut": 15}
_BATCH_DOCUMENTS = 10_000


def seismic_module():
    try:
        import seismic
    except ImportError:
        raise IndexFolderError("the seismic backend needs pyseismic-lsr: pip install 'laconic-pyserini[seismic]' "
                               "(or pip install pyseismic-lsr==0.5.4)") from None
    return seismic


def build_seismic_index(index_dir: str | os.PathLike, *, large_vocabulary: bool | None = None, threads: int = 0,
                        **build) -> Path:
    """Build (or reuse, when built with the same knobs) ``index_dir/seismic`` from the index's encoded collection."""
    unknown = sorted(set(build) - set(BUILD_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown Seismic build option(s) {', '.join(unknown)}; known: {', '.join(BUILD_DEFAULTS)}")
    params = {**BUILD_DEFAULTS, **build}
    index_dir = Path(index_dir)
    manifest = read_impact_manifest(index_dir)
    folder = index_dir / SUBDIR
    cached = read_seismic_build(folder)
    if cached is not None and cached.get("build") == params and \
            (large_vocabulary is None or cached.get("large_vocabulary") == large_vocabulary):
        return folder
    encoding = _source_encoding(index_dir, manifest)
    seismic = seismic_module()
    start = time.perf_counter()
    from ..encode.manifest import iter_vectors

    terms = sorted({term for _, vector in iter_vectors(encoding) for term in vector})
    large = len(terms) > STANDARD_MAX_TERMS if large_vocabulary is None else large_vocabulary
    if not large and len(terms) > STANDARD_MAX_TERMS:
        raise IndexFolderError(f"{len(terms)} distinct terms do not fit Seismic's standard index "
                               f"({STANDARD_MAX_TERMS}); use the large-vocabulary variant")
    dataset = (seismic.SeismicDatasetLV if large else seismic.SeismicDataset)(dim=len(terms))
    vectors = _add_documents(dataset, iter_vectors(encoding), {term: number for number, term in enumerate(terms)})
    index = (seismic.SeismicIndexLV if large else seismic.SeismicIndex).build_from_dataset(
        dataset, num_threads=threads, **params)
    with building(folder) as partial:  # a failed build leaves nothing behind
        index.save(str(partial / INDEX_STEM))
        (partial / VOCABULARY).write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        # Empty vectors are not indexed by Seismic (they could never score above 0 anyway).
        write_index_manifest(partial, {
            "kind": KIND, "seismic_version": _seismic_version(), "large_vocabulary": large, "build": params,
            "terms": len(terms), "documents": manifest["documents"], "indexed_vectors": vectors,
            "weights": encoding.weights,
            "encoded": str(manifest["encoded"]), "build_seconds": round(time.perf_counter() - start, 1)})
        swap_in(partial, folder, KIND, flag="another --index")  # replaces only a Seismic cache built here
    logger.info("Seismic index (%s, %d terms, %d vectors) built in %.1f s -> %s",
                "large vocabulary" if large else "standard", len(terms), vectors, time.perf_counter() - start, folder)
    return folder


def _source_encoding(index_dir: Path, manifest: dict):
    """The encoded collection the impact index was built from, checked to still hold what was indexed."""
    from ..encode.manifest import EncodeError, read_manifest

    encoded = manifest.get("encoded")
    try:
        encoding = read_manifest(encoded) if encoded else None
    except EncodeError as exc:
        raise IndexFolderError(f"{index_dir}: Seismic is built from the encoded collection the index was built "
                               f"from, and that is unusable: {exc}") from None
    if encoding is None:
        raise IndexFolderError(f"{index_dir}/manifest.json names no encoded collection; rebuild the index with "
                               "`python -m laconic_pyserini.index --input ENCODED_DIR`")
    if encoding.documents != manifest["documents"] or encoding.spec != manifest["spec"] or \
            encoding.encoder_fingerprint != manifest.get(FINGERPRINT_KEY):
        raise IndexFolderError(f"{encoded} no longer holds what {index_dir} was built from ({encoding.documents} vs "
                               f"{manifest['documents']} documents, or another encoder); rebuild the index")
    return encoding


def _add_documents(dataset, vectors, term_ids: dict[str, int]) -> int:
    """Add ``(doc id, {term: weight})`` pairs to a Seismic dataset in batches; returns how many it took."""
    import numpy as np

    added = 0
    batch: list[tuple[str, dict[str, float]]] = []

    def flush() -> int:
        # Seismic wants each row's component ids increasing.
        rows = [(doc_id, sorted((term_ids[t], w) for t, w in vector.items())) for doc_id, vector in batch]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(row) for _, row in rows])
        components = np.fromiter((c for _, row in rows for c, _ in row), dtype=np.int64, count=int(offsets[-1]))
        values = np.fromiter((w for _, row in rows for _, w in row), dtype=np.float32, count=int(offsets[-1]))
        taken = dataset.add_documents_by_id([doc_id for doc_id, _ in rows], components, values, offsets)
        batch.clear()
        return int(taken)

    for pair in vectors:
        batch.append(pair)
        if len(batch) == _BATCH_DOCUMENTS:
            added += flush()
    if batch:
        added += flush()
    return added


def read_seismic_build(folder: Path) -> dict | None:
    """The manifest of a Seismic build folder, or None when there is no whole build there."""
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _seismic_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyseismic-lsr")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"
