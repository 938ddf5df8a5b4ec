"""The served indexes: each opened once through the searcher registry, with its manifest and its encoder group.

Indexes whose queries are encoded by the same model (the same encoder fingerprint, precision and query weights)
share one encoder: the first index of a group encodes for all of them, so the model loads once however many
indexes use it. An index whose engine analyses the text itself (BM25) has no group.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..index.manifest import read_index_manifest
from ..searchers import Searcher, find_backend, kind_of, open_searcher
from .settings import Inference

logger = logging.getLogger(__name__)


@dataclass
class ServedIndex:
    """One served index: its name, location, kind, opened searcher and manifest."""

    name: str
    location: str
    kind: str
    backend: str
    searcher: Searcher
    manifest: dict
    encoder_group: str | None      # None: the engine takes the text (BM25)
    healthy: bool = True
    failure: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def sparse(self) -> bool:
        """Scores are integer dot products of query and document impacts (explanations sum exactly)."""
        return self.kind == "impact" and getattr(getattr(self.searcher, "queries", None), "weights", "impact") == \
            "impact"

    def summary(self) -> dict:
        """What ``GET /v1/indexes`` says of the index."""
        spec = self.manifest.get("spec") or {}
        return {"name": self.name, "kind": self.kind, "backend": self.backend, "location": self.location,
                "encoder": spec.get("name"), "encoder_fingerprint": self.manifest.get("encoder_fingerprint"),
                "documents": self.manifest.get("documents"), "healthy": self.healthy, "failure": self.failure,
                "manifest": self.manifest}


def searcher_options(location: str, inference: Inference) -> tuple[str, str, dict]:
    """The index's kind, its default backend's name and the inference options that backend takes."""
    kind = kind_of(location)
    backend = find_backend(kind, where=location)
    options: dict[str, Any] = {}
    if inference.quantize != "none" and backend.takes("quantize"):
        options["quantize"] = inference.quantize
    if backend.takes("dtype"):
        options["dtype"] = inference.dtype
    return kind, backend.name, options


def open_index(name: str, location: str, inference: Inference) -> ServedIndex:
    """Open one index through the registry (its default backend) with the service's inference settings."""
    kind, backend_name, options = searcher_options(location, inference)
    searcher = open_searcher(location, **options)
    manifest = dict(getattr(searcher, "manifest", None) or {})
    if not manifest and os.path.isdir(location):  # a searcher that keeps no manifest of its own (BM25)
        manifest = read_index_manifest(location)
    group = encoder_group(searcher, manifest, kind, options)
    return ServedIndex(name, location, kind, backend_name, searcher, manifest, group)


def encoder_group(searcher: Searcher, manifest: dict, kind: str, options: dict) -> str | None:
    """Indexes whose query texts one model encodes alike: the same encoder fingerprint, query weights and
    precision (sparse indexes of every backend share one), or also the same kind (dense vectors differ by backend)."""
    if not getattr(searcher, "encodes_queries", False):
        return None
    queries = getattr(searcher, "queries", None)
    weights = queries.weights if queries is not None else f"dense {kind}"
    return json.dumps([manifest.get("encoder_fingerprint") or manifest.get("spec"), weights,
                       options.get("quantize", "none"), options.get("dtype", "auto")], sort_keys=True)


def open_indexes(indexes: dict[str, str], inference: Inference) -> dict[str, ServedIndex]:
    """Every configured index, opened in order; an index that fails to open is an error (the service does not
    start half-configured)."""
    served = {}
    for name, location in indexes.items():
        served[name] = open_index(name, location, inference)
        logger.info("serving %s: %s index at %s", name, served[name].kind, location)
    return served


def encode_texts(searcher: Searcher, texts: list[str]) -> list:
    """Query texts as the searcher's own batch path encodes them, one entry per text: ``{term: weight}`` for
    sparse searchers (the group's shared form, see :func:`searchable`), a row for dense ones."""
    queries = getattr(searcher, "queries", None)
    if queries is not None:  # sparse searchers: QueryEncoding, which batch_search uses too
        return queries.encode(texts)
    encode_many = getattr(searcher, "encode_queries", None)
    if encode_many is not None:  # dense searchers: one row per text
        rows = encode_many(texts)
        return [rows[i:i + 1] for i in range(len(texts))]
    return [searcher.encode_query(text) for text in texts]


def searchable(searcher: Searcher, vector: Any) -> Any:
    """A group's ``{term: weight}`` vector as this searcher's ``search_encoded`` takes it: a searcher that
    prepares vectors its own way (Milvus: term ids) takes it as a pre-encoded query, the others as it is."""
    prepare = getattr(searcher, "query_vectors", None)
    if isinstance(vector, dict) and callable(prepare):
        return prepare({"q": vector})["q"]
    return vector
