"""Index folders' ``manifest.json``: what was indexed, with what, how many documents, and of which kind.

Every index this package builds (Lucene BM25 and impact, faiss, Seismic) carries one; searchers are chosen by its
``kind``. A build is made aside (``.laconic-tmp-DIR``) and swapped in by :func:`finish_build` once complete
(:mod:`laconic_pyserini.outputs`); ``DIR`` must be new, empty, or an index of the same kind this toolkit built --
rebuilding over it replaces it, which is how an index is rebuilt -- and anything else is refused
(:func:`claim_index`), as is an ``--index`` equal to, inside or containing the input.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import __version__
from ..errors import LaconicError
from ..json_file import read_json_file
from ..outputs import check_not_inside_output, claim_folder, swap_in, write_json_atomic

MANIFEST = "manifest.json"


class IndexFolderError(LaconicError, RuntimeError):
    """An index folder that is missing, incomplete or of the wrong kind."""


def read_index_manifest(index_dir: str | os.PathLike) -> dict:
    """The manifest of an index built by this package; a clear error for anything else."""
    index_dir = Path(index_dir)
    path = index_dir / MANIFEST
    if not index_dir.is_dir():
        raise IndexFolderError(f"{index_dir}: no such index folder (build it with `python -m laconic_pyserini.index`)")
    return read_json_file(path, IndexFolderError, invalid="rebuild the index", missing=(
        f"{index_dir} was not built by laconic_pyserini.index (rebuild it, or pass an index built with "
        "`python -m laconic_pyserini.index`)"))


def write_index_manifest(index_dir: Path, manifest: dict) -> None:
    """Write ``manifest`` (with this package's version) into ``index_dir``."""
    write_json_atomic(index_dir / MANIFEST, {"package_version": __version__, **manifest}, sort_keys=True)


def claim_index(index_dir: Path, kind: str, inputs, *, flag: str = "--index") -> None:
    """Refuse an index folder that is neither new/empty nor our own ``kind`` index, or that overlaps an input."""
    check_not_inside_output(index_dir, flag=flag)
    claim_folder(index_dir, kind, flag=flag, inputs=inputs)


def finish_build(partial: Path, index_dir: Path, kind: str, *, flag: str = "--index") -> Path:
    """Swap a complete build in from ``partial`` (replacing only an older ``kind`` index of ours)."""
    return swap_in(partial, index_dir, kind, flag=flag)


def check_kind_holds(index_dir: str | os.PathLike, manifest: dict) -> str:
    """The manifest's ``kind``, once checked against what ``index_dir`` holds: a Lucene index (bm25, impact) has its
    segments, an impact index records its encoder spec and a BM25 one none, a faiss folder has its vectors and ids.
    A manifest edited to name another kind would otherwise be searched the wrong way."""
    index_dir = Path(index_dir)
    kind = manifest.get("kind")
    problem = None
    if kind in ("bm25", "impact") and not any(index_dir.glob("segments_*")):
        problem = "no Lucene segments (segments_*)"
    elif kind == "bm25" and "spec" in manifest:
        problem = "an encoder spec, which only an impact index records"
    elif kind in ("impact", "faiss") and not isinstance(manifest.get("spec"), dict):
        problem = "no encoder spec"
    elif kind == "faiss" and not ((index_dir / "index").is_file() and (index_dir / "docid").is_file()):
        problem = "no faiss 'index' and 'docid' files"
    if problem:
        raise IndexFolderError(f"{index_dir}: its {MANIFEST} says kind {kind!r} but the folder holds {problem}; "
                               "rebuild the index (python -m laconic_pyserini.index)")
    return str(kind)
