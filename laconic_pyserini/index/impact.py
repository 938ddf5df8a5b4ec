"""Anserini impact indexes of encoded collections (``python -m laconic_pyserini.index --input ENCODED --index DIR``).

The encoded folder (written by ``python -m laconic_pyserini.encode``) is indexed unchanged with Anserini's
``IndexCollection -collection JsonVectorCollection -impact -pretokenized``: each term's integer impact becomes its
term frequency, so Lucene's score of a query is exactly the dot product of the query's and the document's impacts.

A float collection (``encode --weights float``) is quantised on the way in by the one rule, ``rint(w *
quant_scale)`` dropping ≤ 0 (:func:`laconic_pyserini.quantize.quantize`): Anserini is given the very lines the
integer collection of the same vectors holds, so the Lucene index (postings, scores) is the same, and the floats stay
in the collection for Seismic and Milvus.

The index folder's ``manifest.json`` records ``kind: "impact"``, the document count (checked against the encoding
manifest: a mismatch is an error, never a warning), the encoder spec copied from the encoding, and the encoded
folder's path, from which a Seismic index can be built later (:mod:`laconic_pyserini.index.seismic`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from ..outputs import TMP_PREFIX, building, locked
from .lucene import index_collection
from .manifest import IndexFolderError, claim_index, finish_build, read_index_manifest, write_index_manifest

logger = logging.getLogger(__name__)

KIND = "impact"


def build_impact_index(encoded_dir: str | os.PathLike, index_dir: str | os.PathLike, *, threads: int = 2,
                       optimize: bool = False, store_raw: bool = True) -> Path:
    """Index an encoded collection with Anserini (impact postings, pretokenized terms); returns the index folder.

    The part files are checked against the encoding manifest's sha256 first, so a modified collection is never
    indexed. ``optimize`` merges the index into one segment (slower to build, a little faster to search).
    ``store_raw`` keeps each document's line (Anserini's ``-storeRaw``: its text, and its vector) in the index, so
    ``searcher.doc(docid)``, ours and stock pyserini's, answers from the index alone (docs/indexing.md: its size).
    """
    from ..encode.manifest import EncodeError, read_manifest, verify_parts

    encoded_dir = Path(encoded_dir).resolve()
    index_dir = Path(index_dir)
    try:
        manifest = read_manifest(encoded_dir)
        verify_parts(manifest)
    except EncodeError as exc:
        raise IndexFolderError(str(exc)) from None
    if not manifest.parts:
        raise IndexFolderError(f"{encoded_dir}: the encoding holds no documents; nothing to index")
    spec = manifest.spec
    if spec.get("kind") == "dense":
        raise IndexFolderError(f"{encoded_dir}: encoded with the dense encoder {spec.get('name')!r}; an impact index "
                               "needs sparse vectors (build a faiss index instead)")
    claim_index(index_dir, KIND, [encoded_dir])
    with locked(index_dir), building(index_dir) as partial:
        return _build(manifest, encoded_dir, partial, index_dir, threads, optimize, store_raw)


def _build(manifest, encoded_dir: Path, partial: Path, index_dir: Path, threads: int, optimize: bool,
           store_raw: bool) -> Path:
    spec = manifest.spec
    # Anserini reads every file under -input; the manifest's part list is the collection, nothing else.
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX + "impact-", dir=index_dir.parent) as tmp:
        _stage_parts(manifest, Path(tmp))
        args = ["-collection", "JsonVectorCollection", "-input", tmp, "-index", str(partial),
                "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized",
                "-threads", str(threads)]
        if optimize:
            args.append("-optimize")
        if store_raw:
            args.append("-storeRaw")
        indexed = index_collection(args, partial, index_dir, documents=manifest.documents,
                                   desc=f"index {index_dir.name} (impact)")
    if indexed != manifest.documents:
        raise IndexFolderError(
            f"{partial}: Anserini indexed {indexed} documents but {encoded_dir / 'manifest.json'} lists "
            f"{manifest.documents}; Anserini's warnings above say why (unindexable / empty / errors); re-encode "
            "the folder if its files were changed")
    write_index_manifest(partial, {
        "kind": KIND,
        "documents": indexed,
        "spec": spec,
        "encoder_fingerprint": manifest.encoder_fingerprint,
        "encoded": str(encoded_dir),
        "corpus": manifest.corpus,
        "encoding_counts": manifest.counts,
        "encoding_quantize": manifest.settings.get("quantize", "none"),
        "encoding_weights": manifest.weights,  # the index itself always holds integer impacts
        "empty_vector_term": _empty_term(),
        "store_raw": store_raw,
        "anserini": {"collection": "JsonVectorCollection", "generator": "DefaultLuceneDocumentGenerator",
                     "impact": True, "pretokenized": True, "optimize": optimize,
                     "storeRaw": store_raw},
    })
    logger.info("impact index of %d documents (%s) -> %s", indexed, spec.get("name"), index_dir)
    return finish_build(partial, index_dir, KIND)


def _stage_parts(manifest, tmp: Path) -> None:
    """The collection's parts under ``tmp`` for Anserini: links to integer parts; float parts quantised."""
    import dataclasses

    from ..encode.manifest import iter_documents
    from ..encode.writer import vector_line
    from ..quantize import quantize
    from ..spec import EncoderSpec

    scale = EncoderSpec.from_dict(manifest.spec).quant_scale if manifest.weights == "float" else None
    for number, part in enumerate(manifest.parts):
        source = (manifest.root / part.path).resolve()
        target = tmp / f"part-{number:06d}{''.join(source.suffixes)}"
        if scale is None:
            os.symlink(source, target)
            continue
        # iter_documents checks the part's sha256 as it reads; an empty vector comes back {} and is written as the
        # reserved term again, as the integer writer does.
        with open(target, "w", encoding="utf-8") as out:
            for doc_id, contents, vector in iter_documents(dataclasses.replace(manifest, parts=[part])):
                out.write(vector_line(doc_id, contents, quantize(vector, scale)))


def _empty_term() -> str:
    from ..encode.manifest import EMPTY_TERM

    return EMPTY_TERM


def read_impact_manifest(index_dir: str | os.PathLike) -> dict:
    """The manifest of an impact index; a clear error for any other folder."""
    manifest = read_index_manifest(index_dir)
    kind = manifest.get("kind")
    if kind != KIND:
        raise IndexFolderError(
            f"{index_dir}: a {kind!r} index, not an impact index; build one from an encoded collection with "
            "`python -m laconic_pyserini.index --input ENCODED_DIR --index DIR`")
    if not isinstance(manifest.get("spec"), dict):
        raise IndexFolderError(f"{Path(index_dir) / 'manifest.json'}: no encoder spec; rebuild the index")
    return manifest
