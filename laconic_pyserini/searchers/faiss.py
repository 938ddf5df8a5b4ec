"""Dense search over a faiss index folder (:mod:`laconic_pyserini.index.faiss`, written by ``encode.dense``).

Queries are encoded on the fly with the encoder spec recorded in the index manifest (or a compatible one given
explicitly). The folder is the one pyserini's ``FaissSearcher`` reads (``index`` + ``docid``); this searcher uses
faiss directly so that serving a dense index needs neither the JVM nor pyserini's encoder zoo.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..run import Hits, Run, check_k


class FaissSearcher:
    """``batch_search(queries, k, threads) -> Run``; ``encode_queries`` and ``search_vectors`` separately, for
    timing the two halves of a query."""

    encodes_queries = True

    def __init__(self, index_dir: str | os.PathLike, *, encoder: str | None = None, device: str = "cpu",
                 dtype: str = "auto", ef_search: int | None = None, batch_size: int = 32,
                 unrecorded_encoder: str = "refuse") -> None:
        import faiss

        from ..fingerprint import FINGERPRINT_KEY, check_encoder_identity
        from ..index.faiss import read_faiss_folder
        from ..spec import EncoderSpec, SpecError, load_spec

        self.index_dir = Path(index_dir)
        self.manifest = read_faiss_folder(index_dir)
        indexed = EncoderSpec.from_dict(self.manifest["spec"], source=str(self.index_dir / "manifest.json"))
        self.spec = indexed
        if encoder is not None:
            asked = load_spec(encoder)
            why = indexed.mismatch(asked)
            if why:
                raise SpecError(f"--encoder {encoder!r} does not match the encoder of {index_dir} ({why}); "
                                f"search it with --encoder {indexed.name} or leave --encoder out")
            check_encoder_identity(self.manifest.get(FINGERPRINT_KEY), asked, where=f"index {index_dir}", fix=(
                "search with the encoder it was built with (leave --encoder out), or rebuild the index with this one"),
                unrecorded=unrecorded_encoder)
            self.spec = asked
        self._checked, self.unrecorded = encoder is not None, unrecorded_encoder
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self.index = faiss.read_index(str(self.index_dir / "index"))
        self.docids = (self.index_dir / "docid").read_text(encoding="utf-8").splitlines()
        if len(self.docids) != self.index.ntotal:
            from ..index.manifest import IndexFolderError

            raise IndexFolderError(f"{self.index_dir}: {len(self.docids)} doc ids for {self.index.ntotal} vectors; "
                                   "rebuild the index")
        if ef_search is not None:
            if not hasattr(self.index, "hnsw"):
                raise ValueError(f"{index_dir}: ef_search applies to HNSW indexes, this one is "
                                 f"{self.manifest.get('index_type')}")
            self.index.hnsw.efSearch = ef_search
        self._encoder = None

    @property
    def encoder(self):
        # Loaded on first use: a caller that only searches pre-encoded vectors never pays for the model.
        if self._encoder is None:
            from ..fingerprint import FINGERPRINT_KEY, check_encoder_identity
            from ..modeling.dense import DenseEncoder

            if not self._checked:
                check_encoder_identity(self.manifest.get(FINGERPRINT_KEY), self.spec, where=f"index {self.index_dir}",
                                       fix="its model files changed since; restore them, or rebuild the index",
                                       unrecorded=self.unrecorded)

            self._encoder = DenseEncoder(self.spec, device=self.device, dtype=self.dtype, batch_size=self.batch_size)
        return self._encoder

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_queries(texts)

    def search_vectors(self, vectors: np.ndarray, k: int, threads: int = 1) -> list[Hits]:
        """Top-``k`` hits of each row of ``vectors``, searched on ``threads`` OpenMP threads. The count is scoped to
        the search: faiss and torch share one OpenMP runtime, so a count left behind would be every later torch
        computation's."""
        check_k(k, threads)
        from ..modeling.cpu import threads as scoped_threads

        k = min(k, self.index.ntotal)
        with scoped_threads(threads):
            scores, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        return [[(self.docids[r], float(s)) for s, r in zip(row_scores, row_ids) if r >= 0]
                for row_scores, row_ids in zip(scores, rows)]

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode_queries([text])

    def search_encoded(self, encoded: np.ndarray, k: int) -> Hits:
        return self.search_vectors(encoded, k)[0]

    def search(self, query: str, k: int = 10) -> Hits:
        return self.search_vectors(self.encode_queries([query]), k)[0]

    def batch_search(self, queries: dict[str, str], k: int, threads: int = 1) -> Run:
        qids = list(queries)
        vectors = self.encode_queries([queries[q] for q in qids])
        return dict(zip(qids, self.search_vectors(vectors, k, threads)))

    def close(self) -> None:
        """Let go of the index and the query encoder (faiss holds no file open once read)."""
        self.index = self._encoder = None
