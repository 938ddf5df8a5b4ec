"""Anserini index builds, run through the JVM in-process.

BM25 (issue: foundation)::

    python -m laconic_pyserini.index --bm25 --input BEIR_DIR_OR_NAME --index DIR [--fields flat|multifield] [--threads N]

``flat`` joins title and text into ``contents`` (Anserini's BeirFlatCollection); ``multifield`` keeps ``title`` as
its own field (BeirMultifieldCollection) and searches ``contents`` and ``title`` with weight 1 each.

Impact (learned sparse vectors written by ``python -m laconic_pyserini.encode``)::

    python -m laconic_pyserini.index --input ENCODED_DIR --index DIR [--threads N] [--optimize]

A recipe (``index_recipes/*.yaml``: encode a dataset, then index it, then check the document count)::

    python -m laconic_pyserini.index --recipe index_recipes/scifact.splade-tiny.yaml [--work DIR]

Every index folder gets a ``manifest.json`` (what was indexed, with what, how many documents) that searchers read.
A build goes to ``DIR.partial`` and is renamed when complete, so a crash never leaves a half index under ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .data import DataError, iter_corpus

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FIELDS = ("flat", "multifield")


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


def _write_manifest(index_dir: Path, manifest: dict) -> None:
    manifest = {"package_version": __version__, **manifest}
    (index_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def run_index_collection(args: Sequence[str]) -> None:
    """Run Anserini's ``IndexCollection`` with these arguments in this process's JVM."""
    from . import jvm

    logger.info("IndexCollection %s", " ".join(args))
    jvm.autoclass("io.anserini.index.IndexCollection").main(list(args))


def lucene_document_count(index_dir: str | os.PathLike) -> int:
    """Number of documents in a Lucene index (Anserini's own reader)."""
    from . import jvm

    jvm.start()
    from pyserini.index.lucene import LuceneIndexReader

    return int(LuceneIndexReader(str(index_dir)).stats()["documents"])


def _finish(partial: Path, index_dir: Path) -> Path:
    if index_dir.exists():
        shutil.rmtree(index_dir)
    partial.rename(index_dir)
    return index_dir


def build_bm25_index(source: str | os.PathLike, index_dir: str | os.PathLike, *, fields: str = "flat",
                     threads: int = 2) -> Path:
    """Index a BEIR corpus for BM25 with Anserini's default English analyzer (Porter stemming, stopwords)."""
    if fields not in FIELDS:
        raise ValueError(f"fields must be one of {FIELDS}, not {fields!r}")
    index_dir = Path(index_dir)
    partial = index_dir.with_name(index_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    count = 0
    with tempfile.TemporaryDirectory(prefix="laconic-bm25-", dir=index_dir.parent if index_dir.parent.exists() else None) as tmp:
        collection = Path(tmp) / "docs.jsonl"
        with open(collection, "w", encoding="utf-8") as f:
            for doc in iter_corpus(source):
                if fields == "flat":
                    row = {"id": doc.id, "contents": doc.contents}
                else:
                    row = {"id": doc.id, "contents": doc.text, "title": doc.title}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        args = ["-collection", "JsonCollection", "-input", tmp, "-index", str(partial),
                "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads),
                "-storePositions", "-storeDocvectors", "-storeRaw"]
        if fields == "multifield":
            args += ["-fields", "title"]
        run_index_collection(args)
    indexed = lucene_document_count(partial)
    if indexed != count:
        raise IndexFolderError(f"{partial}: Anserini indexed {indexed} documents but the corpus has {count}; "
                          "see the IndexCollection log above for skipped documents")
    _write_manifest(partial, {"kind": "bm25", "fields": fields, "source": str(source), "documents": count})
    return _finish(partial, index_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bm25", action="store_true", help="build a BM25 index of a BEIR corpus")
    parser.add_argument("--input", help="BEIR folder or dataset name (--bm25), or an encoded collection folder")
    parser.add_argument("--index", help="output index folder")
    parser.add_argument("--fields", choices=FIELDS, default="flat")
    parser.add_argument("--threads", type=int, default=None, help="indexing threads (default 2, or the recipe's)")
    parser.add_argument("--optimize", action="store_true", help="impact: merge the index into one segment")
    parser.add_argument("--recipe", help="an index_recipes/*.yaml file: encode, index and check the count")
    parser.add_argument("--work", default="work", help="--recipe: folder for the encoding and the index")
    parser.add_argument("--device", default=None, help="--recipe: encoding device (overrides the recipe's)")
    from .milvus_build import add_arguments as add_milvus_arguments

    add_milvus_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.recipe is None and (args.input is None or args.index is None):
        parser.error("--input and --index are required (or --recipe)")
    from .impact_index import build_impact_index
    from .spec import SpecError

    try:
        if args.recipe:
            from .encode import EncodeError
            from .index_recipe import RecipeError, run_recipe

            try:
                path = run_recipe(args.recipe, args.work, threads=args.threads, device=args.device)
            except (RecipeError, EncodeError) as exc:
                raise IndexFolderError(str(exc)) from None
        elif args.index and args.index.startswith("milvus"):
            from .milvus_build import main_export

            return main_export(args)
        elif args.bm25:
            path = build_bm25_index(args.input, args.index, fields=args.fields, threads=args.threads or 2)
        else:
            path = build_impact_index(args.input, args.index, threads=args.threads or 2, optimize=args.optimize)
    except (DataError, IndexFolderError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = read_index_manifest(path)
    print(f"{path}\t{manifest['documents']} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
