"""Exact learned-sparse search over an Anserini impact index, through Anserini's ``SimpleImpactSearcher``.

::

    searcher = LaconicSearcher("indexes/scifact.splade-tiny")            # queries encoded with the index's spec
    searcher.search("does aspirin prevent heart attacks?", k=10)         # [(docid, score), ...]
    searcher.batch_search({"q1": "text", "q2": {"heart": 120}}, k=1000)  # texts and pre-encoded vectors alike

A document's score is the dot product of the query's and the document's integer impacts, exactly.

Why we do not call ``LuceneImpactSearcher.search``: it keeps a query term only if ``idf[term] > min_idf`` with
``min_idf=0``, and ``idf = log(N / df)`` is 0 for a term found in every document, so such a term silently leaves the
query and every score drops by its contribution. We open the index ourselves as its Java searcher does
(:meth:`~laconic_pyserini.searchers.lucene.BulkLucene.open_impact`), read the index's vocabulary (the keys of its
``.idf``) in one JNI call (:func:`~laconic_pyserini.searchers.lucene.index_terms`), build the ``{term: impact}``
query ourselves and skip only terms the index lacks. pyserini's wrapper, whose import pulls in torch and whose idf
table costs several JNI calls per indexed term, and Anserini's ``SimpleImpactSearcher``, whose class alone takes
a second to load, are opened only when asked for (:attr:`LaconicSearcher.lucene`, :attr:`LaconicSearcher.java`:
the per-hit path, the tests' and the benchmark's reference).

Hits come out of Java in bulk (:class:`~laconic_pyserini.searchers.lucene.BulkLucene`: a constant number of JNI
calls per query, where Anserini's ``ScoredDoc[]`` costs a Python wrapper and two calls per hit), identical to
Anserini's own ``search``. The per-hit path stays as ``search_vector_per_hit`` / ``batch_search_vectors_per_hit``:
the benchmark's and the tests' reference.
"""

from __future__ import annotations

import logging
import os

from ..fingerprint import FINGERPRINT_KEY
from ..run import Hits, Run, check_k
from ..spec import EncoderSpec
from .lucene import BulkLucene, index_terms, open_java_searcher
from .queries import QueryEncoding, QueryVector, scorable_terms

logger = logging.getLogger(__name__)


class LaconicSearcher:
    """Search an impact index with query texts (encoded with the index's encoder) or quantised query vectors.

    ``encoder``: ``None`` (the spec recorded in the index), a spec name / model folder / hub id, or a loaded
    :class:`~laconic_pyserini.modeling.SparseEncoder`; an encoder whose contract differs from the index's is
    refused (:class:`~laconic_pyserini.spec.SpecError`), and so is one whose weights or tokenizer differ from
    those the index was built with (:class:`~laconic_pyserini.fingerprint.FingerprintError`). ``batch_size`` is
    the query-encoding batch.
    """

    encodes_queries = True

    def __init__(self, index_dir: str | os.PathLike, encoder=None, *, batch_size: int = 32, device: str = "cpu",
                 dtype: str = "auto", quantize: str = "none", unrecorded_encoder: str = "refuse") -> None:
        from .. import jvm
        from ..index.impact import read_impact_manifest

        self.index_dir = str(index_dir)
        self.manifest = read_impact_manifest(index_dir)
        self.spec = EncoderSpec.from_dict(self.manifest["spec"], source=f"{index_dir}/manifest.json")
        self.queries = QueryEncoding(self.spec, encoder, where=f"index {index_dir}", batch_size=batch_size,
                                     device=device, dtype=dtype, quantize=quantize,
                                     index_fingerprint=self.manifest.get(FINGERPRINT_KEY),
                                     unrecorded_encoder=unrecorded_encoder)
        self._java = self._pyserini = None
        self.bulk = BulkLucene.open_impact(self.index_dir)
        self.vocabulary = index_terms(self.bulk.reader if self.bulk is not None else self.java.reader)
        self._JArrayList, self._JHashMap, self._JInt = (
            jvm.autoclass(name) for name in ("java.util.ArrayList", "java.util.HashMap", "java.lang.Integer"))
        self._boxed: dict[int, object] = {}

    @property
    def java(self):
        """Anserini's ``SimpleImpactSearcher`` on the index, opened on first use (the per-hit path's)."""
        if self._java is None:
            self._java = open_java_searcher("impact", self.index_dir)
        return self._java

    @property
    def lucene(self):
        """pyserini's ``LuceneImpactSearcher`` on the same index, opened on first use (not by searches)."""
        if self._pyserini is None:
            from pyserini.search.lucene import LuceneImpactSearcher

            # query_encoder=None gives pyserini's whitespace token counter, which we never call.
            self._pyserini = LuceneImpactSearcher(self.index_dir, None)
        return self._pyserini

    # ------------------------------------------------------------------------------------------ queries

    def _java_query(self, vector: QueryVector):
        """The ``{term: Integer}`` Java map of a query's indexed terms, one JNI call per term (the per-hit path's),
        or None when it has none."""
        terms = scorable_terms(vector, self.vocabulary)
        if not terms:
            return None
        query = self._JHashMap()
        for term, impact in terms.items():
            # Java Integers are immutable: one boxed object per impact value saves a JNI construction per term.
            boxed = self._boxed.get(impact)
            if boxed is None:
                boxed = self._boxed.setdefault(impact, self._JInt(int(impact)))
            query.put(term, boxed)
        return query

    @staticmethod
    def _hits(java_hits) -> Hits:
        return [(hit.docid, float(hit.score)) for hit in java_hits]

    # ------------------------------------------------------------------------------------------ search

    def search(self, query: str | QueryVector, k: int = 10) -> Hits:
        """Top ``k`` ``(docid, score)`` of one query text or ``{term: impact}`` vector."""
        vector = self.queries.vectors({"q": query})["q"]
        return self.search_vector(vector, k)

    def encode_query(self, text: str) -> QueryVector:
        return self.queries.encode([text])[0]

    def search_encoded(self, encoded: QueryVector, k: int) -> Hits:
        return self.search_vector(encoded, k)

    def search_vector(self, vector: QueryVector, k: int = 10) -> Hits:
        check_k(k)
        if self.bulk is None:
            return self.search_vector_per_hit(vector, k)
        terms = scorable_terms(vector, self.vocabulary)
        if not terms:
            return []
        return self.bulk.top_integer(self.bulk.weighted_query(terms), k)

    def batch_search(self, queries: dict[str, str | QueryVector], k: int, threads: int = 1) -> Run:
        """``{qid: [(docid, score), ...]}`` for texts (encoded in batches) and/or pre-encoded vectors."""
        return self.batch_search_vectors(self.queries.vectors(queries), k, threads)

    def batch_search_vectors(self, vectors: dict[str, QueryVector], k: int, threads: int = 1) -> Run:
        """Every query's top ``k``, on ``threads`` threads (Lucene's part runs in parallel)."""
        check_k(k, threads)
        if self.bulk is None:
            return self.batch_search_vectors_per_hit(vectors, k, threads)
        empty = [qid for qid, vector in vectors.items() if not scorable_terms(vector, self.vocabulary)]
        if empty:
            logger.warning("%d queries share no term with the index and get no hits (e.g. %s)", len(empty), empty[0])
        return self.bulk.many(vectors.items(), lambda vector: self.search_vector(vector, k), threads)

    # ------------------------------------------------------------------------------------------ per-hit path

    def search_vector_per_hit(self, vector: QueryVector, k: int = 10) -> Hits:
        """Anserini's own ``search`` with hits read one by one (pyserini's per-hit reading, kept for comparison with :meth:`search_vector`)."""
        query = self._java_query(vector)
        if query is None:
            return []
        return self._hits(self.java.search(query, int(k)))

    def batch_search_vectors_per_hit(self, vectors: dict[str, QueryVector], k: int, threads: int = 1) -> Run:
        """Anserini's own Java-threaded ``batch_search``, hits read one by one."""
        qids = self._JArrayList()
        java_queries = self._JArrayList()
        empty = []
        for qid, vector in vectors.items():
            query = self._java_query(vector)
            if query is None:
                empty.append(qid)  # no indexed term: nothing can match, and Anserini needs no empty query
                continue
            qids.add(qid)
            java_queries.add(query)
        if empty:
            logger.warning("%d queries share no term with the index and get no hits (e.g. %s)", len(empty), empty[0])
        results = {}
        if len(empty) < len(vectors):
            found = self.java.batch_search(java_queries, qids, int(k), int(threads))
            results = {entry.getKey(): entry.getValue() for entry in found.entrySet().toArray()}
        return {qid: self._hits(results[qid]) if qid in results else [] for qid in vectors}

    def close(self) -> None:
        if self.bulk is not None:
            self.bulk.close()
        if self._java is not None:
            self._java.close()
        if self._pyserini is not None:
            self._pyserini.close()
