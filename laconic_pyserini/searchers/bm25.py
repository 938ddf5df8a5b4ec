"""BM25 over an Anserini index built by ``laconic_pyserini.index --bm25``, through Anserini's SimpleSearcher.

Hits come out of Java in bulk (:class:`~laconic_pyserini.searchers.lucene.BulkLucene`), identical to Anserini's
own ``search``: BM25 scores are real numbers, so Lucene's own ``(score desc, id asc)`` sort is kept as is. The
Java searcher is opened directly (importing pyserini's ``LuceneSearcher`` imports torch); the per-hit path,
pyserini's ``search``/``batch_search``, stays as ``search_per_hit`` / ``batch_search_per_hit`` on a pyserini
``LuceneSearcher`` opened on first use (:attr:`Bm25Searcher.searcher`).
"""

from __future__ import annotations

import os

from ..run import Hits, Run, check_k
from .lucene import BulkLucene, open_java_searcher


class Bm25Searcher:
    """BM25 with BEIR's Anserini settings (k1=0.9, b=0.4); multifield indexes search contents and title."""

    encodes_queries = False  # Lucene analyses the text inside its search: there is no separate encoding step

    def __init__(self, index_dir: str | os.PathLike, *, k1: float = 0.9, b: float = 0.4) -> None:
        from .. import jvm
        from ..index.manifest import read_index_manifest

        manifest = read_index_manifest(index_dir)
        self.index_dir = str(index_dir)
        self.k1, self.b = float(k1), float(b)
        self.java = open_java_searcher("bm25", self.index_dir)
        self.java.set_bm25(self.k1, self.b)  # what pyserini's LuceneSearcher.set_bm25 calls
        self.fields = {"contents": 1.0, "title": 1.0} if manifest.get("fields") == "multifield" else {}
        self.bulk = BulkLucene.open(self.java)
        self._pyserini = None
        self._java_fields = None
        if self.fields:
            self._java_fields = jvm.autoclass("java.util.HashMap")()
            for field, boost in self.fields.items():
                self._java_fields.put(field, jvm.autoclass("java.lang.Float")(boost))

    @property
    def searcher(self):
        """pyserini's ``LuceneSearcher`` on the same index and BM25 settings, opened on first use (the per-hit path)."""
        if self._pyserini is None:
            from pyserini.search.lucene import LuceneSearcher

            self._pyserini = LuceneSearcher(self.index_dir)
            self._pyserini.set_bm25(self.k1, self.b)
        return self._pyserini

    def search(self, query: str, k: int = 10) -> Hits:
        check_k(k)
        if self.bulk is None:
            return self.search_per_hit(query, k)
        return self.bulk.top(self.bulk.text_query(query, self._java_fields), k)

    def encode_query(self, text: str) -> str:
        return text

    def search_encoded(self, encoded: str, k: int) -> list[tuple[str, float]]:
        return self.search(encoded, k)

    def batch_search(self, queries: dict[str, str], k: int, threads: int = 1) -> Run:
        """Every query's top ``k``, on ``threads`` threads (Lucene's part runs in parallel)."""
        check_k(k, threads)
        if self.bulk is None:
            return self.batch_search_per_hit(queries, k, threads)
        return self.bulk.many(queries.items(), lambda query: self.search(query, k), threads)

    # ------------------------------------------------------------------------------------------ per-hit path

    def search_per_hit(self, query: str, k: int = 10) -> Hits:
        """pyserini's ``LuceneSearcher.search``, hits read one by one (kept for comparison with :meth:`search`)."""
        return [(hit.docid, float(hit.score)) for hit in self.searcher.search(query, k, fields=self.fields)]

    def batch_search_per_hit(self, queries: dict[str, str], k: int, threads: int = 1) -> Run:
        """pyserini's Java-threaded ``batch_search``, hits read one by one."""
        qids = list(queries)
        results = self.searcher.batch_search([queries[q] for q in qids], qids, k, threads, fields=self.fields)
        return {q: [(hit.docid, float(hit.score)) for hit in results.get(q, [])] for q in qids}

    def close(self) -> None:
        """Close the Java searcher (and pyserini's, if the per-hit path opened one)."""
        if self._pyserini is not None:
            self._pyserini.close()
            self._pyserini = None
        self.java.close()
