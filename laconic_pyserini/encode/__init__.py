"""Encoding corpora and topics into Anserini's formats (``python -m laconic_pyserini.encode[.query]``).

The typed API the other modules call:

- :func:`encode_corpus` → an ``--embeddings`` folder (JsonVectorCollection parts + ``manifest.json``), resumable,
  from :class:`~.settings.EncodeSettings` (what the encoding is) and :class:`~.settings.InferenceSettings` (how fast);
- :func:`read_manifest` / :func:`iter_vectors` / :func:`verify_collection` to use and check such a folder;
- :func:`merge_shards` to combine the folders' shards; :func:`encode_topics` for pre-encoded queries.

Importing this package imports neither torch nor the JVM; the model loads when encoding starts.
"""

from __future__ import annotations

from .corpus import encode_corpus
from .manifest import EMPTY_TERM, EncodeError, Manifest, PartInfo, iter_vectors, read_manifest, verify_parts
from .shards import merge_shards, verify_collection

__all__ = ["EMPTY_TERM", "EncodeError", "Manifest", "PartInfo", "encode_corpus", "encode_topics", "iter_vectors",
           "merge_shards", "read_manifest", "verify_collection", "verify_parts"]


def __getattr__(name: str):
    # Imported lazily so that `python -m laconic_pyserini.encode.query` does not find its module half-imported.
    if name == "encode_topics":
        from .query import encode_topics

        return encode_topics
    raise AttributeError(name)
