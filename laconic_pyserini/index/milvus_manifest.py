"""The manifest a Milvus collection carries: one JSON row in the side collection ``COLLECTION__laconic``.

Milvus Lite implements no collection properties, so the manifest (encoder spec, term-id mapping, source and its
checksums, document count, export progress) lives in a small side collection, which works the same on every
Milvus: one VARCHAR row keyed ``manifest``, written with strong consistency so that the next read sees it. The
collection's description names the side collection, for a person browsing the server.

:func:`open_collection` is what searchers call: it refuses a collection this package did not make, an export that
is not finished, and a collection whose vector field no longer matches its manifest (kind or dimension).
"""

from __future__ import annotations

import json
import logging

from .milvus_uri import MilvusError, MilvusLocation, connect, disconnect, parse_milvus_uri

logger = logging.getLogger(__name__)

FORMAT = "laconic-pyserini/milvus-collection"
FORMAT_VERSION = 1
KIND = "milvus"
SIDE_SUFFIX = "__laconic"
KEY = "manifest"
_MAX_JSON = 65_535
#: Vector field names by what the collection holds; the primary key is the document id.
FIELDS = {"sparse": "sparse", "dense": "dense"}
ID_FIELD = "id"


def side_name(collection: str) -> str:
    return collection + SIDE_SUFFIX


def bounded_call(location: MilvusLocation, what: str, function, *args, **kwargs):
    """``function(*args, **kwargs)`` bounded by the location's timeout; a :class:`MilvusError` saying ``what``."""
    from pymilvus.exceptions import MilvusException

    kwargs.setdefault("timeout", location.timeout)
    try:
        return function(*args, **kwargs)
    except MilvusException as exc:
        raise MilvusError(f"{location.uri}: {what} failed ({exc.message or exc}); check the server's log") from None
    except Exception as exc:  # a grpc deadline or a dropped connection: the same answer, never a hang
        raise MilvusError(f"{location.uri}: {what} failed ({type(exc).__name__}: {str(exc)[:200]}); "
                          "is the server still up?") from None


def read_manifest(client, location: MilvusLocation) -> dict | None:
    """The collection's manifest, or None when it has no side collection."""
    side = side_name(location.collection)
    if not bounded_call(location, f"looking up {side}", client.has_collection, side):
        return None
    rows = bounded_call(location, f"reading {side}", client.query, side, filter=f'key == "{KEY}"',
                 output_fields=["value"], consistency_level="Strong")
    if not rows:
        return None
    try:
        manifest = json.loads(rows[0]["value"])
    except json.JSONDecodeError:
        raise MilvusError(f"{location.uri}: the manifest in {side} is not JSON; it was not written by this package "
                          "(use another collection name)") from None
    if manifest.get("format") != FORMAT:
        raise MilvusError(f"{location.uri}: {side} holds no laconic-pyserini manifest (format "
                          f"{manifest.get('format')!r}); use another collection name")
    return manifest


def write_manifest(client, location: MilvusLocation, manifest: dict) -> None:
    """Create the side collection if needed and upsert the manifest row."""
    write_row(client, location, KEY, manifest)


def read_row(client, location: MilvusLocation, key: str) -> dict | None:
    """The JSON object of row ``key`` of the side collection (strong consistency), or None."""
    side = side_name(location.collection)
    if not bounded_call(location, f"looking up {side}", client.has_collection, side):
        return None
    rows = bounded_call(location, f"reading {side}", client.query, side, filter=f'key == "{key}"',
                        output_fields=["value"], consistency_level="Strong")
    try:
        value = json.loads(rows[0]["value"]) if rows else None
    except json.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else None


def delete_row(client, location: MilvusLocation, key: str) -> None:
    side = side_name(location.collection)
    bounded_call(location, f"deleting {key} from {side}", client.delete, side, filter=f'key == "{key}"')


def write_row(client, location: MilvusLocation, key: str, value: dict) -> None:
    """Create the side collection if needed and upsert row ``key`` holding ``value`` as JSON."""
    from pymilvus import DataType

    side = side_name(location.collection)
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    if len(text.encode("utf-8")) > _MAX_JSON:
        raise MilvusError(f"{location.uri}: the {key} row is {len(text)} bytes, more than a VARCHAR holds")
    if not bounded_call(location, f"looking up {side}", client.has_collection, side):
        schema = client.create_schema(auto_id=False, description=f"laconic-pyserini manifest of {location.collection}")
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("value", DataType.VARCHAR, max_length=_MAX_JSON)
        # Milvus servers require a vector field in every collection; this one is never searched.
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
        index = client.prepare_index_params()
        index.add_index("unused", index_type="FLAT", metric_type="L2")
        bounded_call(location, f"creating {side}", client.create_collection, side, schema=schema, index_params=index,
              consistency_level="Strong")
    bounded_call(location, f"writing the {key} into {side}", client.upsert, side,
                 [{"key": key, "value": text, "unused": [0.0, 0.0]}])


def vector_field(client, location: MilvusLocation) -> dict | None:
    """``{"name", "vectors": "sparse"|"dense", "dimension"}`` of the collection's vector field; None if it has
    no collection of that name."""
    from pymilvus import DataType

    if not bounded_call(location, f"looking up {location.collection}", client.has_collection, location.collection):
        return None
    described = bounded_call(location, f"describing {location.collection}", client.describe_collection,
                             location.collection)
    found, primary = [], None
    for f in described["fields"]:
        if f["type"] == DataType.SPARSE_FLOAT_VECTOR:
            found.append({"name": f["name"], "vectors": "sparse", "dimension": None})
        elif f["type"] == DataType.FLOAT_VECTOR:
            found.append({"name": f["name"], "vectors": "dense", "dimension": int(f["params"]["dim"])})
        if f.get("is_primary"):
            primary = f
    if primary is None or primary["name"] != ID_FIELD or primary["type"] != DataType.VARCHAR:
        return {"name": None, "vectors": "non-VARCHAR 'id' primary key", "dimension": None}
    if len(found) != 1:
        return {"name": None, "vectors": f"{len(found)} vector fields", "dimension": None}
    return found[0]


def check_field(location: MilvusLocation, field: dict, vectors: str, dimension: int | None, what: str) -> None:
    """Refuse a collection whose vector field is not the ``vectors`` kind and ``dimension`` the caller needs."""
    if field["vectors"] != vectors or field["name"] != FIELDS.get(vectors):
        raise MilvusError(f"{location.uri}: a collection of another kind ({field['vectors']} field "
                          f"{field['name']!r}) where {what} needs a {vectors} field {FIELDS[vectors]!r}; "
                          "use another collection name")
    if vectors == "dense" and field["dimension"] != dimension:
        raise MilvusError(f"{location.uri}: dimension mismatch: the collection's {field['name']!r} field has "
                          f"dimension {field['dimension']}, {what} has {dimension}; use another collection name")


def open_collection(uri: str) -> tuple[MilvusLocation, object, dict]:
    """Connect to a finished export: ``(location, client, manifest)``, loaded and ready to search."""
    location = parse_milvus_uri(uri)
    client = connect(location, create=False)  # searching a missing embedded file must not create it
    try:
        return location, client, _ready(location, client, uri)
    except BaseException:
        disconnect(client, location)
        raise


def _ready(location: MilvusLocation, client, uri: str) -> dict:
    manifest = read_manifest(client, location)
    field = vector_field(client, location)
    if manifest is None or field is None:
        missing = "no such collection" if field is None else "a collection this package did not make"
        raise MilvusError(f"{uri}: {missing}; export one with `python -m laconic_pyserini.index --input "
                          f"ENCODED_DIR --index {uri}`")
    if not manifest.get("complete"):
        raise MilvusError(f"{uri}: the export is not finished ({manifest.get('committed', 0)} of "
                          f"{manifest.get('documents')} documents); rerun the same index command to finish it")
    check_field(location, field, manifest["vectors"], manifest.get("dimension"), "its manifest")
    state = bounded_call(location, f"checking that {location.collection} is loaded", client.get_load_state,
                  location.collection)
    if str(state.get("state")) != "Loaded":
        logger.info("%s: loading the collection", uri)
        bounded_call(location, f"loading {location.collection}", client.load_collection, location.collection,
              timeout=max(location.timeout, 600.0))
    return manifest


# ------------------------------------------------------------------------------------------ term ids

def vocabulary(spec) -> dict[str, int]:
    """``{term: id}`` of the spec's tokenizer: the raw token strings the encoder writes, and their ids."""
    from pathlib import Path

    from ..spec import resolve_model_location

    folder = Path(resolve_model_location(spec.tokenizer or spec.model))
    if not spec.gguf_file and (folder / "tokenizer.json").is_file():
        # The tokenizers library reads the same file transformers' fast tokenizer wraps, without importing torch.
        from tokenizers import Tokenizer

        return dict(Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab(with_added_tokens=True))
    from ..modeling.loading import load_tokenizer

    tokenizer, _ = load_tokenizer(spec, resolve_model_location(spec.model))
    return dict(tokenizer.get_vocab())


def term_ids_record(spec, vocab: dict[str, int]) -> dict:
    """What the manifest records of the term → id mapping, so that a searcher can rebuild it and prove it equal."""
    import hashlib

    digest = hashlib.sha256()
    for term, term_id in sorted(vocab.items(), key=lambda item: item[1]):
        digest.update(f"{term_id}\t{term}\n".encode("utf-8"))
    return {"scheme": "tokenizer-vocabulary", "tokenizer": spec.tokenizer or spec.model, "size": len(vocab),
            "sha256": digest.hexdigest()}


def check_term_ids(location: MilvusLocation, manifest: dict, spec, vocab: dict[str, int]) -> None:
    recorded = manifest.get("term_ids") or {}
    found = term_ids_record(spec, vocab)
    if recorded.get("sha256") != found["sha256"]:
        raise MilvusError(f"{location.uri}: the tokenizer {found['tokenizer']!r} here maps terms to other ids "
                          f"({found['size']} terms, sha256 {found['sha256'][:12]}…) than the export did "
                          f"({recorded.get('size')} terms, {str(recorded.get('sha256'))[:12]}…); install the "
                          f"tokenizer {recorded.get('tokenizer')!r} the collection was exported with")
