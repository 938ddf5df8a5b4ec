"""Seismic indexes (``pyseismic-lsr``) built once beside an impact index, from the same encoded collection.

The build reads the encoded collection the Lucene index was built from (the path is in ``DIR/manifest.json``)
and writes ``DIR/seismic/``. Documents keep their integer impacts as float32 values, so a Seismic score is the same
dot product Lucene computes. Build knobs (``n_postings``, ``centroid_fraction``, ``summary_energy``, ...) are
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

from ..outputs import building, swap_in, write_json_atomic
from .impact import read_impact_manifest
from .manifest import IndexFolderError

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
    from ..encode.manifest import EncodeError, iter_vectors, read_manifest

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
    encoded = manifest.get("encoded")
    try:
        encoding = read_manifest(encoded) if encoded else None
    except EncodeError as exc:
        raise IndexFolderError(f"{index_dir}: Seismic is built from the encoded collection the index was built "
                               f"from, and that is unusable: {exc}") from None
    if encoding is None:
        raise IndexFolderError(f"{index_dir}/manifest.json names no encoded collection; rebuild the index with "
                               "`python -m laconic_pyserini.index --input ENCODED_DIR`")
    if encoding.documents != manifest["documents"] or encoding.spec != manifest["spec"]:
        raise IndexFolderError(f"{encoded} no longer holds what {index_dir} was built from ({encoding.documents} vs "
                               f"{manifest['documents']} documents, or another encoder); rebuild the index")
    seismic = seismic_module()
    import numpy as np

    start = time.perf_counter()
    terms = sorted({term for _, vector in iter_vectors(encoding) for term in vector})
    term_ids = {term: number for number, term in enumerate(terms)}
    large = len(terms) > STANDARD_MAX_TERMS if large_vocabulary is None else large_vocabulary
    if not large and len(terms) > STANDARD_MAX_TERMS:
        raise IndexFolderError(f"{len(terms)} distinct terms do not fit Seismic's standard index "
                               f"({STANDARD_MAX_TERMS}); use the large-vocabulary variant")
    dataset = (seismic.SeismicDatasetLV if large else seismic.SeismicDataset)(dim=len(terms))
    vectors = 0
    batch: list[tuple[str, dict[str, int]]] = []

    def flush() -> int:
        # Seismic wants each row's component ids increasing.
        ids = [(doc_id, sorted((term_ids[t], w) for t, w in vector.items())) for doc_id, vector in batch]
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(row) for _, row in ids])
        components = np.fromiter((c for _, row in ids for c, _ in row), dtype=np.int64, count=int(offsets[-1]))
        values = np.fromiter((w for _, row in ids for _, w in row), dtype=np.float32, count=int(offsets[-1]))
        added = dataset.add_documents_by_id([doc_id for doc_id, _ in ids], components, values, offsets)
        batch.clear()
        return int(added)

    for doc_id, vector in iter_vectors(encoding):
        batch.append((doc_id, vector))
        if len(batch) == _BATCH_DOCUMENTS:
            vectors += flush()
    if batch:
        vectors += flush()
    index_class = seismic.SeismicIndexLV if large else seismic.SeismicIndex
    index = index_class.build_from_dataset(dataset, num_threads=threads, **params)
    with building(folder) as partial:
        index.save(str(partial / INDEX_STEM))
        (partial / VOCABULARY).write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        from .. import __version__

        # Empty vectors are not indexed by Seismic (they could never score above 0 anyway).
        write_json_atomic(partial / "manifest.json", {
            "kind": KIND, "package_version": __version__, "seismic_version": _seismic_version(),
            "large_vocabulary": large, "build": params, "terms": len(terms), "documents": manifest["documents"],
            "indexed_vectors": vectors, "encoded": str(encoded), "build_seconds": round(time.perf_counter() - start, 1),
        }, sort_keys=True)
        swap_in(partial, folder, KIND, flag="another --index")  # replaces only a Seismic cache built here
    logger.info("Seismic index (%s, %d terms, %d vectors) built in %.1f s -> %s",
                "large vocabulary" if large else "standard", len(terms), vectors, time.perf_counter() - start, folder)
    return folder


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
