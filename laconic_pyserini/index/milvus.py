"""Export an encoded collection (sparse) or a faiss folder (dense) into a Milvus collection.

::

    python -m laconic_pyserini.index --input ENCODED_DIR --index milvus://HOST:PORT/COLLECTION [--batch-size 1000]
        [--milvus-index SPARSE_INVERTED_INDEX|SPARSE_WAND] [--shards N]
    python -m laconic_pyserini.index --input FAISS_DIR --index milvus://HOST:PORT/COLLECTION [--milvus-index FLAT|HNSW]

Sparse: each document's integer impacts (exactly what the Lucene impact index holds) become a
``SPARSE_FLOAT_VECTOR`` keyed by the encoder tokenizer's term ids (float32 holds integers below 2^24 exactly), so
inner products equal Lucene's scores; a float collection (``encode --weights float``) gives its float weights
(the manifest's ``weights`` says which). Dense: the faiss vectors become a ``FLOAT_VECTOR`` field searched by inner
product (``FLAT`` by default: exact, as faiss-flat). The document id is the VARCHAR primary key.

Resume: the manifest row (:mod:`laconic_pyserini.index.milvus_manifest`) counts the documents committed after every
batch, and every batch is an *upsert* by primary key, so a batch that reached the server before a kill -9 but not
the count is replaced, never doubled: rerunning the same command continues and ends with each document once. An
existing collection of another source, encoder or kind is refused, never overwritten.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .. import __version__
from ..json_file import read_json_file
from .milvus_manifest import (FIELDS, FORMAT, FORMAT_VERSION, ID_FIELD, KIND, bounded_call, check_field, read_manifest,
                              side_name, term_ids_record, vector_field, vocabulary, write_manifest)
from .milvus_lease import Lease, writer_lease
from .milvus_uri import MilvusError, MilvusLocation, connect, disconnect, parse_milvus_uri
from ..outputs import after_commit

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 1000
SPARSE_INDEXES = ("SPARSE_INVERTED_INDEX", "SPARSE_WAND")
DENSE_INDEXES = ("FLAT", "HNSW")
MAX_ID_BYTES = 1024
#: Test hook (tests/test_milvus.py): exit abruptly after this many batches, after the batch is sent and before
#: its count is recorded: the worst moment for a kill.
EXIT_AFTER_ENV = "LACONIC_MILVUS_EXIT_AFTER_BATCHES"
#: What must be equal for a rerun to continue an export rather than be refused.
_IDENTITY = ("vectors", "spec", "source", "dimension", "term_ids", "index")


def export_to_milvus(source: str | os.PathLike, uri: str, *, batch_size: int = DEFAULT_BATCH,
                     index_type: str | None = None, shards: int | None = None, progress: bool = True) -> dict:
    """Export ``source`` (an encoded collection or a faiss folder) to the collection ``uri``; returns its manifest."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    source = Path(source).resolve()
    location = parse_milvus_uri(uri)
    raw = _read_json(source / "manifest.json")
    if raw.get("kind") == "faiss":
        target, rows = _dense_source(source, raw, index_type)
    else:
        target, rows = _sparse_source(source, index_type)
    target["index"]["shards"] = shards
    client = connect(location)
    try:
        return _export(client, location, target, rows, batch_size, progress)
    finally:
        disconnect(client, location)


def _export(client, location: MilvusLocation, target: dict, rows, batch_size: int, progress: bool) -> dict:
    _refuse_foreign(client, location, target, read_manifest(client, location))  # before the lease writes a row
    with writer_lease(client, location) as lease:
        return _export_held(client, location, target, rows, batch_size, progress, lease)


def _export_held(client, location: MilvusLocation, target: dict, rows, batch_size: int, progress: bool,
                 lease: Lease) -> dict:
    uri = location.uri
    committed = _prepare(client, location, target)
    if committed is None:
        logger.info("%s: already complete (%d documents); nothing to do", uri, target["documents"])
        return read_manifest(client, location)
    manifest = {**target, "committed": committed, "complete": False}
    start = time.perf_counter()
    _write(client, location, manifest, rows(committed), batch_size, progress, lease)
    seconds = time.perf_counter() - start
    lease.check()
    _finish(client, location, manifest)
    manifest.update(complete=True, export_seconds=round(seconds, 3))
    write_manifest(client, location, manifest)
    logger.info("%s: %d documents in %.1f s", uri, manifest["documents"], seconds)
    return manifest


def _read_json(path: Path) -> dict:
    return read_json_file(path, MilvusError, invalid="re-encode the folder", missing=(
        "--input must be an encoded collection (python -m laconic_pyserini.encode) or a faiss folder "
        "(python -m laconic_pyserini.encode.dense)"))


def _base(vectors: str, spec: dict, documents: int, source: dict, index: dict, raw: dict) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__, "kind": KIND,
            "vectors": vectors, "field": FIELDS[vectors], "metric": "IP", "spec": spec, "documents": documents,
            "source": source, "index": index, "corpus": raw.get("corpus"),
            "encoder_fingerprint": raw.get("encoder_fingerprint") or raw.get("settings", {}).get("encoder_fingerprint")}


def _sparse_source(source: Path, index_type: str | None):
    from ..encode.manifest import EMPTY_TERM, EncodeError, iter_vectors, read_manifest as read_encoded, verify_parts
    from ..spec import EncoderSpec

    try:
        encoded = read_encoded(source)
        verify_parts(encoded)
    except EncodeError as exc:
        raise MilvusError(str(exc)) from None
    index_type = index_type or SPARSE_INDEXES[0]
    if index_type not in SPARSE_INDEXES:
        raise MilvusError(f"--milvus-index {index_type}: a sparse collection takes {' or '.join(SPARSE_INDEXES)}")
    spec = EncoderSpec.from_dict(encoded.spec, source=str(source / "manifest.json"))
    vocab = vocabulary(spec)
    parts = hashlib.sha256("".join(f"{p.path}\t{p.sha256}\n" for p in encoded.parts).encode()).hexdigest()
    described = {"path": str(source), "format": "encoded-collection", "parts": len(encoded.parts),
                 "parts_sha256": parts, "documents": encoded.documents}
    target = _base("sparse", spec.to_dict(), encoded.documents, described, {"type": index_type},
                   _read_json(source / "manifest.json"))
    target.update(dimension=None, term_ids=term_ids_record(spec, vocab), counts=encoded.counts,
                  weights=encoded.weights)

    def rows(skip: int) -> Iterator[dict]:
        for ordinal, (doc_id, vector) in enumerate(iter_vectors(encoded, keep_empty_term=True)):
            if ordinal < skip:
                continue
            ids = {}
            for term, impact in vector.items():
                if term == EMPTY_TERM:
                    continue  # Milvus keeps an empty sparse vector; Lucene needed a reserved term
                term_id = vocab.get(term)
                if term_id is None:
                    raise MilvusError(f"{source}: document {doc_id!r} has the term {term!r}, which the tokenizer "
                                      f"of {spec.name!r} does not have; re-encode with that encoder")
                ids[term_id] = float(impact)
            yield {ID_FIELD: _doc_id(source, doc_id), FIELDS["sparse"]: ids}

    return target, rows


def _dense_source(source: Path, raw: dict, index_type: str | None):
    import faiss

    from .faiss import read_faiss_folder
    from ..encode.manifest import sha256_file

    read_faiss_folder(source)
    index_type = index_type or DENSE_INDEXES[0]
    if index_type not in DENSE_INDEXES:
        raise MilvusError(f"--milvus-index {index_type}: a dense collection takes {' or '.join(DENSE_INDEXES)}")
    ids = (source / "docid").read_text(encoding="utf-8").splitlines()
    dimension = int(raw["dimension"])
    described = {"path": str(source), "format": "faiss", "index_sha256": sha256_file(source / "index"),
                 "docid_sha256": sha256_file(source / "docid"), "documents": len(ids)}
    index = {"type": index_type, **({"M": 32, "efConstruction": 200, "ef": 128} if index_type == "HNSW" else {})}
    target = _base("dense", raw["spec"], len(ids), described, index, raw)
    target.update(dimension=dimension, term_ids=None)

    def rows(skip: int) -> Iterator[dict]:
        vectors = faiss.read_index(str(source / "index"))
        if vectors.ntotal != len(ids) or vectors.d != dimension:
            raise MilvusError(f"{source}: {vectors.ntotal} vectors of dimension {vectors.d} for {len(ids)} ids and "
                              f"dimension {dimension} in its manifest; rebuild the folder")
        for start in range(skip, len(ids), DEFAULT_BATCH):
            block = vectors.reconstruct_n(start, min(DEFAULT_BATCH, len(ids) - start))
            for offset, row in enumerate(block):
                yield {ID_FIELD: _doc_id(source, ids[start + offset]), FIELDS["dense"]: row.tolist()}

    return target, rows


def _doc_id(source: Path, doc_id: str) -> str:
    if len(doc_id.encode("utf-8")) > MAX_ID_BYTES:
        raise MilvusError(f"{source}: document id {doc_id[:60]!r}… is longer than {MAX_ID_BYTES} bytes, the "
                          "collection's primary key length")
    return doc_id


def _prepare(client, location: MilvusLocation, target: dict) -> int | None:
    """Documents already committed by an earlier run of this export (None: it is complete); refuses the rest."""
    field = vector_field(client, location)
    existing = read_manifest(client, location)
    if existing is None:
        _refuse_foreign(client, location, target, existing)
        write_manifest(client, location, {**target, "committed": 0, "complete": False})
        _create(client, location, target)
        return 0
    differs = [key for key in _IDENTITY if existing.get(key) != target.get(key)]
    if differs:
        raise MilvusError(f"{location.uri}: holds an export of {existing['source'].get('path')} "
                          f"({existing['spec'].get('name')}, {existing['documents']} documents) that differs in "
                          f"{', '.join(differs)}; export to another collection name (this one is left as it is)")
    if field is None:  # killed between writing the manifest and creating the collection
        _create(client, location, target)
        return 0
    check_field(location, field, target["vectors"], target["dimension"], str(target["source"]["path"]))
    if existing.get("complete"):
        return None
    logger.info("%s: resuming after %d of %d documents", location.uri, existing["committed"], target["documents"])
    return int(existing["committed"])


def _refuse_foreign(client, location: MilvusLocation, target: dict, existing: dict | None) -> None:
    """Refuse a collection that exists without a manifest of ours (another tool's)."""
    field = vector_field(client, location) if existing is None else None
    if field is not None:
        check_field(location, field, target["vectors"], target["dimension"], str(target["source"]["path"]))
        raise MilvusError(f"{location.uri}: the collection exists and was not made by laconic_pyserini (no "
                          f"{side_name(location.collection)}); use another collection name")


def _create(client, location: MilvusLocation, target: dict) -> None:
    from pymilvus import DataType

    vectors, index = target["vectors"], target["index"]
    schema = client.create_schema(auto_id=False, description=f"laconic-pyserini {vectors} vectors of "
                                  f"{target['spec']['name']}; manifest in {side_name(location.collection)}")
    schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
    params = client.prepare_index_params()
    if vectors == "sparse":
        schema.add_field(FIELDS["sparse"], DataType.SPARSE_FLOAT_VECTOR)
        params.add_index(FIELDS["sparse"], index_type=index["type"], metric_type="IP")
    else:
        schema.add_field(FIELDS["dense"], DataType.FLOAT_VECTOR, dim=target["dimension"])
        extra = {"M": index["M"], "efConstruction": index["efConstruction"]} if index["type"] == "HNSW" else {}
        params.add_index(FIELDS["dense"], index_type=index["type"], metric_type="IP", params=extra)
    options = {"num_shards": index["shards"]} if index.get("shards") else {}
    bounded_call(location, f"creating {location.collection}", client.create_collection, location.collection,
          schema=schema, index_params=params, **options)


def _write(client, location: MilvusLocation, manifest: dict, rows: Iterator[dict], batch_size: int,
           progress: bool, lease: Lease) -> None:
    from tqdm import tqdm

    exit_after = int(os.environ.get(EXIT_AFTER_ENV, "0") or 0)
    sent = 0
    with tqdm(total=manifest["documents"], initial=manifest["committed"], unit="doc", disable=not progress,
              desc=f"milvus {location.collection}", dynamic_ncols=True) as bar:
        batch: list[dict] = []
        for row in rows:
            batch.append(row)
            if len(batch) < batch_size and manifest["committed"] + len(batch) < manifest["documents"]:
                continue
            lease.renew()  # a writer whose lease was taken over stops here, before it writes
            # An upsert, not an insert: after a kill, the first batch may already be on the server.
            bounded_call(location, f"upserting {len(batch)} documents", client.upsert, location.collection, batch)
            sent += 1
            if exit_after and sent >= exit_after:
                os._exit(137)
            manifest["committed"] += len(batch)
            write_manifest(client, location, manifest)
            after_commit(sent)  # the test hooks of laconic_pyserini.outputs (hold a writer mid-export)
            bar.update(len(batch))
            batch = []
    if batch or manifest["committed"] != manifest["documents"]:
        raise MilvusError(f"{manifest['source']['path']}: read {manifest['committed'] + len(batch)} documents but "
                          f"its manifest lists {manifest['documents']}; is the folder changing?")


def _finish(client, location: MilvusLocation, manifest: dict) -> None:
    """Seal the segments, wait for the index and the load, and check the entity count."""
    long = max(location.timeout, 600.0)
    bounded_call(location, f"flushing {location.collection}", client.flush, location.collection, timeout=long)
    bounded_call(location, f"loading {location.collection}", client.load_collection, location.collection, timeout=long)
    count = entity_count(client, location)
    if count != manifest["documents"]:
        raise MilvusError(f"{location.uri}: holds {count} entities after the export, not {manifest['documents']}; "
                          "something else writes into this collection")


def entity_count(client, location: MilvusLocation) -> int:
    """Live entities (upserted rows counted once), read with strong consistency."""
    rows = bounded_call(location, f"counting {location.collection}", client.query, location.collection, filter="",
                 output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])


def add_arguments(parser) -> None:
    """The index CLI's Milvus options (``--index milvus://…``)."""
    group = parser.add_argument_group("Milvus (--index milvus://HOST:PORT/COLLECTION)")
    group.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="documents per upsert")
    group.add_argument("--milvus-index", default=None,
                       help="sparse: SPARSE_INVERTED_INDEX (default) or SPARSE_WAND; "
                       "dense: FLAT (default, exact) or HNSW")
    group.add_argument("--shards", type=int, default=None, help="shards of a new collection (default: the server's)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def main_export(args) -> int:
    """``python -m laconic_pyserini.index --input DIR --index milvus://…``: prints the location and its count."""
    if args.bm25 or args.recipe:
        raise MilvusError("--bm25 and --recipe build Lucene indexes; export an encoded collection or a faiss folder "
                          "to Milvus with --input DIR --index milvus://HOST:PORT/COLLECTION")
    manifest = export_to_milvus(args.input, args.index, batch_size=args.batch_size, index_type=args.milvus_index,
                                shards=args.shards, progress=not args.no_progress)
    print(f"{args.index}\t{manifest['documents']} documents")
    return 0
