"""faiss index folders: the layout pyserini's ``FaissSearcher`` reads, plus this package's manifest.

Layout of ``DIR``: ``index`` (a faiss index, inner product), ``docid`` (one id per line, in index order) and
``manifest.json`` (``kind: "faiss"``, the encoder spec, counts, index parameters). The vectors come from
:func:`laconic_pyserini.encode.dense.encode_dense_corpus` (which writes the folder through :func:`write_faiss_folder`)
or from another flat folder (:func:`rebuild_faiss_index`, no re-encoding).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..outputs import building, clean_temps, locked
from .manifest import MANIFEST, IndexFolderError, claim_index, finish_build, read_index_manifest, write_index_manifest

KIND = "faiss"
INDEX_TYPES = ("flat", "hnsw")
FORMAT = "laconic-pyserini/faiss-index"


def hnsw_params(m: int, ef_construction: int, ef_search: int) -> dict:
    return {"M": m, "ef_construction": ef_construction, "ef_search": ef_search}


def build_faiss_index(vectors: np.ndarray, index_type: str = "flat", *, hnsw_m: int = 32,
                      ef_construction: int = 200, ef_search: int = 128):
    """An inner-product faiss index over ``vectors`` (float32, one row per document)."""
    import faiss

    if index_type not in INDEX_TYPES:
        raise ValueError(f"index type must be one of {INDEX_TYPES}, not {index_type!r}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dimension = vectors.shape[1]
    if index_type == "flat":
        index = faiss.IndexFlatIP(dimension)
    else:
        index = faiss.IndexHNSWFlat(dimension, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        # efSearch is saved with the index, so FaissSearcher gets the same setting without being told.
        index.hnsw.efSearch = ef_search
    index.add(vectors)
    return index


def write_faiss_folder(folder: Path, index, ids: Sequence[str], manifest: dict) -> None:
    """Write ``index``, its doc ids and ``manifest`` into ``folder``."""
    import faiss

    faiss.write_index(index, str(folder / "index"))
    with open(folder / "docid", "w", encoding="utf-8") as f:
        for doc_id in ids:
            f.write(doc_id + "\n")
    write_index_manifest(folder, manifest)


def is_faiss_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a whole faiss folder (index, doc ids and manifest)."""
    manifest = folder / MANIFEST
    return manifest.is_file() and (folder / "index").is_file() and (folder / "docid").is_file()


def read_faiss_folder(index_dir: str | os.PathLike) -> dict:
    """The manifest of a faiss index folder written here; a clear error for any other folder."""
    manifest = read_index_manifest(index_dir)
    if manifest.get("kind") != KIND:
        raise IndexFolderError(f"{index_dir}: a {manifest.get('kind')!r} index, not a faiss index")
    for name in ("index", "docid"):
        if not (Path(index_dir) / name).is_file():
            raise IndexFolderError(f"{Path(index_dir) / name}: missing; rebuild with "
                                   "`python -m laconic_pyserini.encode.dense`")
    return manifest


def rebuild_faiss_index(flat_dir: str | os.PathLike, output: str | os.PathLike, index_type: str = "hnsw", *,
                        hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 128) -> Path:
    """A new index of ``index_type`` over the vectors of a flat index folder (no re-encoding)."""
    import faiss

    manifest = read_faiss_folder(flat_dir)
    if manifest["index_type"] != "flat":
        raise IndexFolderError(f"{flat_dir}: a {manifest['index_type']} index; rebuild from a flat one (HNSW vectors "
                               "are stored but their graph order would be re-derived from scratch anyway)")
    flat = faiss.read_index(str(Path(flat_dir) / "index"))
    vectors = flat.reconstruct_n(0, flat.ntotal)
    ids = Path(flat_dir, "docid").read_text(encoding="utf-8").splitlines()
    output = Path(output)
    claim_index(output, KIND, [flat_dir], flag="--output")
    with locked(output), building(output) as partial:
        return _rebuild_into(partial, output, manifest, vectors, ids, flat_dir, index_type,
                             dict(hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search))


def _rebuild_into(partial: Path, output: Path, manifest: dict, vectors, ids: list[str], flat_dir, index_type: str,
                  params: dict) -> Path:
    start = time.perf_counter()
    index = build_faiss_index(vectors, index_type, **params)
    new_manifest = {k: v for k, v in manifest.items() if k not in ("package_version", "hnsw")}
    new_manifest.update(index_type=index_type, build_seconds=round(time.perf_counter() - start, 3),
                        rebuilt_from=str(flat_dir))
    if index_type == "hnsw":
        new_manifest["hnsw"] = hnsw_params(params["hnsw_m"], params["ef_construction"], params["ef_search"])
    write_faiss_folder(partial, index, ids, new_manifest)
    return finish_faiss(partial, output)


def finish_faiss(partial: Path, output: Path) -> Path:
    """Swap a finished faiss folder in; the encoder's scratch in it (temporary names) is left out."""
    clean_temps(partial)
    return finish_build(partial, output, KIND, flag="--output")
