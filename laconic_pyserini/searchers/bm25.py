"""BM25 over an Anserini index built by ``laconic_pyserini.index --bm25``, through pyserini's LuceneSearcher."""

from __future__ import annotations

import os

from ..run import Run


class Bm25Searcher:
    """BM25 with BEIR's Anserini settings (k1=0.9, b=0.4); multifield indexes search contents and title."""

    encodes_queries = False  # Lucene analyses the text inside its search: there is no separate encoding step

    def __init__(self, index_dir: str | os.PathLike, *, k1: float = 0.9, b: float = 0.4) -> None:
        from .. import jvm
        from ..index.manifest import read_index_manifest

        manifest = read_index_manifest(index_dir)
        jvm.start()
        from pyserini.search.lucene import LuceneSearcher

        self.index_dir = str(index_dir)
        self.searcher = LuceneSearcher(self.index_dir)
        self.searcher.set_bm25(k1, b)
        self.fields = {"contents": 1.0, "title": 1.0} if manifest.get("fields") == "multifield" else {}

    def search(self, query: str, k: int = 1000) -> list[tuple[str, float]]:
        return [(hit.docid, float(hit.score)) for hit in self.searcher.search(query, k, fields=self.fields)]

    def encode_query(self, text: str) -> str:
        return text

    def search_encoded(self, encoded: str, k: int) -> list[tuple[str, float]]:
        return self.search(encoded, k)

    def batch_search(self, queries: dict[str, str], k: int, threads: int = 1) -> Run:
        qids = list(queries)
        results = self.searcher.batch_search([queries[q] for q in qids], qids, k, threads, fields=self.fields)
        return {q: [(hit.docid, float(hit.score)) for hit in results.get(q, [])] for q in qids}
