"""The on-disk contract of an encoded collection: ``manifest.json`` and the part files it vouches for.

Layout of an ``--embeddings DIR``::

    DIR/manifest.json                          what was encoded, how, counts, parts with sha256, ``complete``
    DIR/vectors/part-00000.jsonl ...           Anserini JsonVectorCollection: {"id", "contents", "vector"}
                                           (``weights``: integer impacts, or the encoder's floats)
    DIR/vectors/shard-01-of-03/part-00000.jsonl  (sharded runs: one sub-folder per shard)
    DIR/shards/shard-01-of-03.json             (sharded runs: each shard's own manifest, merged into DIR/manifest.json)

A collection holds integer impacts ``rint(w * quant_scale)`` (``weights: "impact"``, the default and what every
manifest older than the field holds) or the encoder's positive float weights (``weights: "float"``, ``encode
--weights float``), for the backends that score floats (Seismic, Milvus); a Lucene impact index of a float
collection quantises it on the way in with the one rule (:mod:`laconic_pyserini.quantize`), so it is the index the
integer collection of the same vectors gives.

The part files live in ``vectors/`` and the manifests outside it because Anserini's ``IndexCollection`` reads
*every* file under its ``-input`` folder (sub-folders too, whatever the name or suffix) and logs an exception
for a ``manifest.json`` beside the parts. Index ``DIR/vectors`` (:attr:`Manifest.collection_dir`).

Anserini drops a document whose vector is empty without failing (it counts it as "empty"), so the Lucene
document count would silently fall short of the corpus. A document whose quantised vector is empty is written
with the single term :data:`EMPTY_TERM` at impact 1 instead: Lucene keeps it, it scores 0 for every real query
(no tokenizer produces that string, and the encoder refuses a vector containing it), and
:func:`iter_vectors` gives it back as ``{}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LaconicError
from ..outputs import write_json_atomic  # noqa: F401  (re-exported: the encoders write through it)

#: What ``manifest.json`` says an encoded collection is (:func:`laconic_pyserini.outputs.claim_folder`).
KIND = "encoded"

logger = logging.getLogger(__name__)

FORMAT = "laconic-pyserini/encoded-collection"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
VECTORS_DIR = "vectors"
SHARDS_DIR = "shards"
#: The one term of a document whose vector is empty (see the module docstring).
EMPTY_TERM = "[LACONIC-EMPTY-DOCUMENT]"
#: How many invalid-line messages a manifest keeps (all are counted).
MAX_INVALID_KEPT = 100


class EncodeError(LaconicError, RuntimeError):
    """An output folder that cannot be used as asked (wrong spec, incomplete, tampered); the message says why."""


@dataclass
class PartInfo:
    """One committed part file. ``start``/``end`` are ordinals of non-blank corpus lines, ``[start, end)``."""

    path: str  # relative to the embeddings folder, '/'-separated
    documents: int
    sha256: str
    bytes: int
    start: int
    end: int
    empty_documents: int = 0
    empty_vectors: int = 0
    invalid_lines: int = 0
    terms: int = 0
    invalid: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "PartInfo":
        return cls(**d)


#: Settings that change the bytes written: a resumed run and every shard of one encoding must agree on them
#: (batch size and device only change speed).
CONTRACT_SETTINGS = ("part_size", "window_batches", "dtype", "quantize", "weights", "fields", "docs_as_queries",
                     "skip_invalid")
#: What a contract setting that is not recorded means: ``quantize`` is recorded only when not ``none``, ``weights``
#: only when ``float``, so that folders begun before they existed still resume.
UNRECORDED_SETTINGS = {"quantize": "none", "weights": "impact"}


def recorded_setting(settings: dict, key: str):
    """``settings[key]``, or what its absence means (:data:`UNRECORDED_SETTINGS`; None if nothing)."""
    return settings.get(key, UNRECORDED_SETTINGS.get(key))


@dataclass
class Manifest:
    """The parsed ``manifest.json`` of an encoded collection (or of one shard of it)."""

    root: Path
    spec: dict
    corpus: dict
    shard: dict
    settings: dict
    parts: list[PartInfo]
    complete: bool
    package_version: str
    tail_invalid: list[dict] = field(default_factory=list)
    tail_invalid_lines: int = 0
    shards: list[dict] = field(default_factory=list)
    #: One record per run that encoded parts here: ``first_part`` (its first part's index), the dtype and head kernel
    #: it ran, and the CPU decision behind them (:meth:`~laconic_pyserini.modeling.SparseEncoder.kernels`).
    #: Manifests written before this field have none and still resume.
    kernels: list[dict] = field(default_factory=list)
    #: :func:`~laconic_pyserini.fingerprint.encoder_fingerprint` of the encoder; None in manifests older than it.
    encoder_fingerprint: dict | None = None

    # ------------------------------------------------------------------------------------------ counts

    def _sum(self, key: str) -> int:
        return sum(getattr(p, key) for p in self.parts)

    @property
    def documents(self) -> int:
        """Documents written, empty ones included: the Lucene document count of an index of this folder."""
        return self._sum("documents")

    @property
    def counts(self) -> dict[str, int]:
        return {"documents": self.documents, "empty_documents": self._sum("empty_documents"),
                "empty_vectors": self._sum("empty_vectors"),
                "invalid_lines": self._sum("invalid_lines") + self.tail_invalid_lines, "terms": self._sum("terms")}

    def setting(self, key: str):
        """A recorded setting, or what its absence means (:func:`recorded_setting`)."""
        return recorded_setting(self.settings, key)

    @property
    def weights(self) -> str:
        """``impact`` (integers; manifests older than the setting) or ``float``."""
        return self.setting("weights")

    @property
    def collection_dir(self) -> Path:
        """The folder to give Anserini as ``-input`` (``-collection JsonVectorCollection -impact -pretokenized``)."""
        return self.root / VECTORS_DIR

    # ------------------------------------------------------------------------------------------ (de)serialising

    def to_dict(self) -> dict:
        from .. import __version__

        return {
            "kind": KIND, "format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
            "complete": self.complete, "collection": VECTORS_DIR, "collection_class": "JsonVectorCollection",
            "empty_vector_term": EMPTY_TERM, "spec": self.spec, "corpus": self.corpus, "shard": self.shard,
            "settings": self.settings, "weights": self.weights, "counts": self.counts,
            "invalid": ([i for p in self.parts for i in p.invalid] + self.tail_invalid)[:MAX_INVALID_KEPT],
            "tail_invalid": self.tail_invalid, "tail_invalid_lines": self.tail_invalid_lines,
            "parts": [p.to_dict() for p in self.parts], "shards": self.shards, "kernels": self.kernels,
            "encoder_fingerprint": self.encoder_fingerprint,
        }

    @classmethod
    def from_dict(cls, root: Path, d: dict, where: Path) -> "Manifest":
        if d.get("format") != FORMAT:
            raise EncodeError(f"{where}: not an encoded-collection manifest (format {d.get('format')!r}); "
                              "was this folder written by `python -m laconic_pyserini.encode`?")
        if d.get("format_version") != FORMAT_VERSION:
            raise EncodeError(f"{where}: manifest format_version {d.get('format_version')!r}, this package reads "
                              f"{FORMAT_VERSION}; re-encode with this version")
        try:
            return cls(root=root, spec=d["spec"], corpus=d["corpus"], shard=d["shard"], settings=d["settings"],
                       parts=[PartInfo.from_dict(p) for p in d["parts"]], complete=bool(d["complete"]),
                       package_version=d["package_version"], tail_invalid=d.get("tail_invalid", []),
                       tail_invalid_lines=d.get("tail_invalid_lines", 0), shards=d.get("shards", []),
                       kernels=d.get("kernels", []),
                       encoder_fingerprint=d.get("encoder_fingerprint"))
        except (KeyError, TypeError) as exc:
            raise EncodeError(f"{where}: malformed manifest ({exc!r}); re-encode into an empty folder") from None


def check_same_weights(manifest: Manifest, fingerprint: dict | None, where: Path) -> None:
    """Refuse to resume (or merge into) an encoding whose committed parts came from other weights."""
    from ..fingerprint import fingerprint_difference

    recorded = manifest.encoder_fingerprint
    if fingerprint is None or not manifest.parts:
        return
    if recorded is None or recorded.get("basis") != fingerprint.get("basis"):
        logger.warning("%s: records no comparable encoder fingerprint (an older version wrote it); cannot check that "
                       "the committed parts come from the same weights", where)
        return
    if recorded.get("sha256") != fingerprint.get("sha256"):
        raise EncodeError(f"{where}: this folder was encoded with other weights or tokenizer for encoder "
                          f"{manifest.spec.get('name')!r} ({fingerprint_difference(recorded, fingerprint)}); "
                          "resuming would mix the vectors of two models; pass an empty --embeddings folder")


def load_manifest_file(path: Path, root: Path) -> Manifest:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EncodeError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); the folder is damaged, "
                          "re-encode into an empty folder") from None
    return Manifest.from_dict(root, data, path)


def read_manifest(embeddings_dir: str | os.PathLike, *, require_complete: bool = True) -> Manifest:
    """The manifest of an encoded collection; a clear error when it is missing, malformed or incomplete.

    Part files are not re-hashed here (:func:`iter_vectors` and :func:`verify_parts` do that).
    """
    root = Path(embeddings_dir)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise EncodeError(f"{root}: no such folder; encode a corpus into it with `python -m laconic_pyserini.encode`")
    if not path.is_file():
        shard_files = sorted((root / SHARDS_DIR).glob("shard-*.json")) if (root / SHARDS_DIR).is_dir() else []
        hint = ("it holds shard manifests: merge them with `python -m laconic_pyserini.encode merge "
                f"--embeddings {root}` once every shard has finished") if shard_files else \
            "it was not written by `python -m laconic_pyserini.encode`"
        raise EncodeError(f"{path}: missing; {hint}")
    manifest = load_manifest_file(path, root)
    if require_complete and not manifest.complete:
        raise EncodeError(f"{path}: the encoding is incomplete ({manifest.documents} documents so far); rerun the "
                          "same encode command to finish it")
    return manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def part_intact(root: Path, part: PartInfo) -> bool:
    """The part file exists with the recorded size and sha256."""
    path = root / part.path
    return path.is_file() and path.stat().st_size == part.bytes and sha256_file(path) == part.sha256


def verify_parts(manifest: Manifest) -> None:
    """Check that every part file exists and has the recorded size and sha256."""
    for part in manifest.parts:
        path = manifest.root / part.path
        if not path.is_file():
            raise EncodeError(f"{path}: part file listed in {manifest.root / MANIFEST_NAME} is missing")
        if not part_intact(manifest.root, part):
            raise EncodeError(f"{path}: contents differ from the manifest's sha256 (modified or damaged); "
                              "rerun the same encode command: it re-encodes only the damaged parts")


def iter_vectors(embeddings_dir: str | os.PathLike | Manifest, *,
                 keep_empty_term: bool = False) -> Iterator[tuple[str, dict[str, float]]]:
    """``(doc id, {term: weight})`` for every document, in part order (corpus order for unsharded runs): integer
    impacts, or floats in a ``weights: "float"`` collection (:attr:`Manifest.weights`).

    Each part's sha256 and document count are checked as it is read. The :data:`EMPTY_TERM` of an empty vector
    comes back as ``{}`` unless ``keep_empty_term``.
    """
    for doc_id, _, vector in iter_documents(embeddings_dir, keep_empty_term=keep_empty_term):
        yield doc_id, vector


def iter_documents(embeddings_dir: str | os.PathLike | Manifest, *,
                   keep_empty_term: bool = False) -> Iterator[tuple[str, str, dict[str, float]]]:
    """:func:`iter_vectors` with each document's ``contents``: ``(doc id, contents, vector)``."""
    manifest = embeddings_dir if isinstance(embeddings_dir, Manifest) else read_manifest(embeddings_dir)
    for part in manifest.parts:
        path = manifest.root / part.path
        digest = hashlib.sha256()
        count = 0
        with open(path, "rb") as f:
            for raw in f:
                digest.update(raw)
                obj = json.loads(raw)
                vector = obj["vector"]
                if not keep_empty_term and len(vector) == 1 and EMPTY_TERM in vector:
                    vector = {}
                count += 1
                yield obj["id"], obj["contents"], vector
        if digest.hexdigest() != part.sha256 or count != part.documents:
            raise EncodeError(f"{path}: {count} documents / sha256 {digest.hexdigest()[:12]}… but the manifest "
                              f"says {part.documents} / {part.sha256[:12]}…; the file was modified, re-encode")
