"""Search a Milvus collection exported by :mod:`laconic_pyserini.index.milvus` (``--index milvus://…``).

::

    searcher = MilvusSearcher("milvus://127.0.0.1:19530/scifact_splade_tiny")   # the collection's own encoder
    searcher.batch_search({"q1": "does aspirin prevent heart attacks?"}, k=10)    # texts and/or impact vectors

Sparse collections: queries are encoded with the spec in the collection's manifest (or a ``--encoder`` with the
same contract; anything else is refused exactly as for a Lucene index), quantised to integer impacts and mapped to
term ids with the tokenizer the manifest names (its sha256 must match), so a score is the same integer dot product
Lucene computes. ``query_weights="float"`` sends the encoder's float weights instead (the LACONIC paper's way;
scores are then ``Σ w_q · impact_d``). Dense collections: queries are encoded with the dense spec and searched by
inner product. Queries go to the server in batches of ``search_batch``, ``threads`` batches at a time.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from ..index.milvus_manifest import FIELDS, ID_FIELD, bounded_call, check_term_ids, open_collection, vocabulary
from ..errors import UsageError
from ..fingerprint import FINGERPRINT_KEY, check_encoder_identity
from ..index.milvus_uri import MilvusError, disconnect
from ..quantize import QUERY_WEIGHTS
from ..run import Hits, Run, check_k
from ..spec import EncoderSpec, load_spec
from .queries import QueryEncoding, check_spec

logger = logging.getLogger(__name__)

#: Milvus's largest top-k.
MAX_K = 16_384


class MilvusSearcher:
    """``batch_search(queries, k, threads) -> Run`` over a Milvus collection this package exported."""

    def __init__(self, uri: str, encoder=None, *, batch_size: int = 32, device: str = "cpu", dtype: str = "fp32",
                 query_weights: str = "impact", search_batch: int = 64, unrecorded_encoder: str = "refuse") -> None:
        if query_weights not in QUERY_WEIGHTS:
            raise UsageError(f"--query-weights {query_weights}: choose {' or '.join(QUERY_WEIGHTS)}")
        self.uri = uri
        self.location, self.client, self.manifest = open_collection(uri)
        self.spec = EncoderSpec.from_dict(self.manifest["spec"], source=f"{uri} (its manifest)")
        self.vectors_kind = self.manifest["vectors"]
        self.field = FIELDS[self.vectors_kind]
        self.query_weights, self.search_batch = query_weights, search_batch
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self._dense_encoder = None
        self._checked, self._unrecorded = encoder is not None, unrecorded_encoder
        if self.vectors_kind == "sparse":
            self.queries = QueryEncoding(self.spec, encoder, where=f"collection {uri}", batch_size=batch_size,
                                         device=device, dtype=dtype, weights=query_weights,
                                         index_fingerprint=self.manifest.get(FINGERPRINT_KEY),
                                         unrecorded_encoder=unrecorded_encoder)
            self.term_ids = vocabulary(self.spec)
            check_term_ids(self.location, self.manifest, self.spec, self.term_ids)
        else:
            if query_weights != "impact":
                raise MilvusError(f"{uri}: a dense collection; query_weights applies to sparse collections")
            if encoder is not None:
                asked = load_spec(str(encoder))
                check_spec(self.spec, asked, where=f"collection {uri}", what="query encoder")
                check_encoder_identity(self.manifest.get(FINGERPRINT_KEY), asked, where=f"collection {uri}",
                                       fix="search with the encoder it was exported with (leave --encoder out)",
                                       unrecorded=unrecorded_encoder)

    # ------------------------------------------------------------------------------------------ queries

    def _sparse_vectors(self, queries: dict) -> dict[str, dict[int, float]]:
        vectors = self.queries.vectors(queries)  # impacts or float weights, as query_weights says
        unknown = 0
        out = {}
        for qid, vector in vectors.items():
            ids = {}
            for term, weight in vector.items():
                term_id = self.term_ids.get(term)
                if term_id is None:
                    unknown += 1  # no document can hold it either (the export refused such terms)
                elif weight > 0:
                    ids[term_id] = float(weight)
            out[qid] = ids
        if unknown:
            logger.warning("%d query terms are not in the tokenizer's vocabulary and were dropped", unknown)
        return out

    def _dense_vectors(self, queries: dict) -> dict[str, list[float]]:
        if not all(isinstance(q, str) for q in queries.values()):
            raise MilvusError(f"{self.uri}: a dense collection is searched with query texts, not sparse vectors")
        if self._dense_encoder is None:
            from ..modeling.dense import DenseEncoder

            if not self._checked:
                check_encoder_identity(self.manifest.get(FINGERPRINT_KEY), self.spec, where=f"collection {self.uri}",
                                       fix="its model files changed since; restore them, or export it again",
                                       unrecorded=self._unrecorded)

            self._dense_encoder = DenseEncoder(self.spec, device=self.device, dtype=self.dtype,
                                               batch_size=self.batch_size)
        matrix = self._dense_encoder.encode_queries(list(queries.values()))
        if matrix.shape[1] != self.manifest["dimension"]:
            raise MilvusError(f"{self.uri}: dimension mismatch: the encoder gives {matrix.shape[1]}-dimensional "
                              f"queries, the collection holds {self.manifest['dimension']}")
        return dict(zip(queries, (row.tolist() for row in matrix)))

    def query_vectors(self, queries: dict) -> dict:
        """What is sent to Milvus per query id: ``{term_id: weight}`` (sparse) or a float list (dense)."""
        return self._sparse_vectors(queries) if self.vectors_kind == "sparse" else self._dense_vectors(queries)

    # ------------------------------------------------------------------------------------------ search

    encodes_queries = True

    def encode_query(self, text: str):
        """One query's vector as Milvus takes it (the first half of :meth:`search`, timed apart by serving)."""
        return self.query_vectors({"q": text})["q"]

    def search_encoded(self, encoded, k: int) -> Hits:
        return self.search_vectors({"q": encoded}, k)["q"]

    def search(self, query, k: int = 10) -> Hits:
        return self.batch_search({"q": query}, k)["q"]

    def batch_search(self, queries: dict, k: int, threads: int = 1) -> Run:
        return self.search_vectors(self.query_vectors(queries), k, threads)

    def search_vectors(self, vectors: dict, k: int, threads: int = 1) -> Run:
        """Search prepared query vectors (see :meth:`query_vectors`), ``search_batch`` per request."""
        check_k(k, threads)
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K} (Milvus's largest top-k), not {k}")
        # An empty sparse query matches nothing; Lucene answers it with no hits, so do we, without a request.
        qids = [q for q, v in vectors.items() if len(v) > 0]
        batches = [qids[i:i + self.search_batch] for i in range(0, len(qids), self.search_batch)]
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            answers = list(pool.map(lambda batch: self._search_batch(batch, vectors, k), batches))
        found = {qid: hits for answer in answers for qid, hits in answer.items()}
        return {qid: found.get(qid, []) for qid in vectors}

    def _search_batch(self, qids: list[str], vectors: dict, k: int) -> Run:
        params = {"metric_type": "IP", "params": {}}
        if self.vectors_kind == "sparse":
            params["params"]["drop_ratio_search"] = 0.0  # exact: no query term is dropped
        elif self.manifest["index"]["type"] == "HNSW":
            params["params"]["ef"] = max(k, self.manifest["index"].get("ef", 128))
        answer = bounded_call(self.location, f"searching {len(qids)} queries", self.client.search,
                       self.location.collection, data=[vectors[q] for q in qids], anns_field=self.field, limit=k,
                       search_params=params, output_fields=[])
        run = {}
        for qid, hits in zip(qids, answer):
            pairs = [(hit[ID_FIELD], float(hit["distance"])) for hit in hits]
            if self.vectors_kind == "sparse":
                pairs = [(d, s) for d, s in pairs if s > 0]  # Lucene returns only documents sharing a term
            # Equal scores come back in segment order; sort them by id so that a run does not depend on it.
            run[qid] = sorted(pairs, key=lambda pair: (-pair[1], pair[0]))
        return run

    def close(self) -> None:
        disconnect(self.client, self.location)


def read_collection_manifest(uri: str) -> dict:
    """The manifest of the finished export at ``uri`` (what ``search`` checks before it opens a searcher)."""
    location, client, manifest = open_collection(uri)
    disconnect(client, location)
    return manifest
