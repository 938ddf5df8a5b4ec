"""Index folders' ``manifest.json``: what was indexed, with what, how many documents, and of which kind.

Every index this package builds (Lucene BM25 and impact, faiss, Seismic) carries one; searchers are chosen by its
``kind``. A build is made in ``DIR.partial`` and moved to ``DIR`` by :func:`finish_build` once complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .. import __version__

MANIFEST = "manifest.json"


class IndexFolderError(RuntimeError):
    """An index folder that is missing, incomplete or of the wrong kind."""


def read_index_manifest(index_dir: str | os.PathLike) -> dict:
    """The manifest of an index built by this package; a clear error for anything else."""
    index_dir = Path(index_dir)
    path = index_dir / MANIFEST
    if not index_dir.is_dir():
        raise IndexFolderError(f"{index_dir}: no such index folder (build it with `python -m laconic_pyserini.index`)")
    if not path.is_file():
        raise IndexFolderError(f"{path}: missing; {index_dir} was not built by laconic_pyserini.index "
                          "(rebuild it, or pass an index built with `python -m laconic_pyserini.index`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise IndexFolderError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); rebuild the index") from None


def write_index_manifest(index_dir: Path, manifest: dict) -> None:
    """Write ``manifest`` (with this package's version) into ``index_dir``."""
    manifest = {"package_version": __version__, **manifest}
    (index_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def finish_build(partial: Path, index_dir: Path) -> Path:
    """Move a complete build from ``partial`` to ``index_dir`` (replacing an older build there)."""
    if index_dir.exists():
        shutil.rmtree(index_dir)
    partial.rename(index_dir)
    return index_dir
