"""Approximate learned-sparse search with Seismic (``pyseismic-lsr``), built once beside an impact index.

::

    python -m laconic_pyserini.search --index DIR --backend seismic --topics scifact --output RUN \\
        [--query-cut 10] [--heap-factor 0.7] [--query-weights impact|float]

The first search builds ``DIR/seismic/`` from the same encoded collection the Lucene index was built from (the
path is in ``DIR/manifest.json``) and later searches load it. Documents are what that collection holds: the
encoder's float weights (``encode --weights float``, as the LACONIC authors store them) or integer impacts (then,
with ``query_weights="impact"``, the default, a Seismic score is the same dot product Lucene computes).
``query_weights="float"`` sends the encoder's float query weights, as the LACONIC authors search (their
``use_float_weights=True``); against float documents a score is then ``Σ w_q · w_d``, the authors' own scoring,
and against integer ones ``Σ w_q · impact_d`` (their ranking up to the 1/``quant_scale`` rounding of each document
weight). Seismic only skips work:

- ``query_cut``: only the query's ``query_cut`` highest-weighted terms are looked up (more: better recall, slower);
- ``heap_factor``: a block of postings is scanned only if its summary's score exceeds ``heap_factor`` times the
  current k-th best score (closer to 1: more skipping, faster, lower recall).

The build itself (knobs, vocabulary, the large-vocabulary variant) is :mod:`laconic_pyserini.index.seismic`.
"""

from __future__ import annotations

import json
import os

from ..index.impact import read_impact_manifest
from ..index.seismic import INDEX_STEM, VOCABULARY, build_seismic_index, read_seismic_build, seismic_module
from ..run import Hits, Run, check_k
from ..fingerprint import FINGERPRINT_KEY
from ..spec import EncoderSpec
from .queries import FloatQueryVector, QueryEncoding, QueryVector

DEFAULT_QUERY_CUT = 10
DEFAULT_HEAP_FACTOR = 0.7


class SeismicSearcher:
    """Seismic search over the vectors of an impact index; same query handling as :class:`LaconicSearcher`."""

    encodes_queries = True

    def __init__(self, index_dir: str | os.PathLike, encoder=None, *, query_cut: int = DEFAULT_QUERY_CUT,
                 heap_factor: float = DEFAULT_HEAP_FACTOR, batch_size: int = 32, device: str = "cpu",
                 dtype: str = "auto", quantize: str = "none", large_vocabulary: bool | None = None,
                 build: dict | None = None, query_weights: str = "impact", unrecorded_encoder: str = "refuse") -> None:
        if query_cut < 1 or not 0 < heap_factor <= 1:
            raise ValueError(f"query_cut must be >= 1 and heap_factor in (0, 1]; got {query_cut}, {heap_factor}")
        self.index_dir = str(index_dir)
        manifest = read_impact_manifest(index_dir)
        self.manifest = manifest
        self.spec = EncoderSpec.from_dict(manifest["spec"], source=f"{index_dir}/manifest.json")
        self.queries = QueryEncoding(self.spec, encoder, where=f"index {index_dir}", batch_size=batch_size,
                                     device=device, dtype=dtype, quantize=quantize,
                                     index_fingerprint=manifest.get(FINGERPRINT_KEY), weights=query_weights,
                                     unrecorded_encoder=unrecorded_encoder)
        self.query_weights = query_weights
        folder = build_seismic_index(index_dir, large_vocabulary=large_vocabulary, **(build or {}))
        self.info = read_seismic_build(folder)
        seismic = seismic_module()
        index_class = seismic.SeismicIndexLV if self.info["large_vocabulary"] else seismic.SeismicIndex
        self.index = index_class.load(str(folder / (INDEX_STEM + ".index.seismic")))
        terms = json.loads((folder / VOCABULARY).read_text(encoding="utf-8"))
        self.term_ids = {term: str(number) for number, term in enumerate(terms)}
        self.query_cut, self.heap_factor = int(query_cut), float(heap_factor)
        self._string = seismic.get_seismic_string()

    def _arrays(self, vector: QueryVector | FloatQueryVector):
        import numpy as np

        kept = [(self.term_ids[t], w) for t, w in vector.items() if t in self.term_ids]
        return (np.array([c for c, _ in kept], dtype=self._string), np.array([w for _, w in kept], dtype=np.float32))

    def search(self, query: str | QueryVector, k: int = 10) -> Hits:
        return self.batch_search({"q": query}, k)["q"]

    def encode_query(self, text: str) -> QueryVector | FloatQueryVector:
        return self.queries.encode([text])[0]

    def search_encoded(self, encoded: QueryVector, k: int) -> Hits:
        return self.search_vector(encoded, k)

    def search_vector(self, vector: QueryVector, k: int = 10) -> Hits:
        check_k(k)
        components, values = self._arrays(vector)
        if not len(components):
            return []
        found = self.index.search("q", components, values, int(k), query_cut=self.query_cut,
                                  heap_factor=self.heap_factor)
        return [(doc_id, float(score)) for _, score, doc_id in found]

    def batch_search(self, queries: dict[str, str | QueryVector], k: int, threads: int = 1) -> Run:
        return self.batch_search_vectors(self.queries.vectors(queries), k, threads)

    def batch_search_vectors(self, vectors: dict[str, QueryVector], k: int, threads: int = 1) -> Run:
        check_k(k, threads)
        import numpy as np

        qids, components, values = [], [], []
        for qid, vector in vectors.items():
            c, v = self._arrays(vector)
            if len(c):
                qids.append(qid)
                components.append(c)
                values.append(v)
        run: Run = {qid: [] for qid in vectors}
        if qids:
            # Seismic's fixed-width strings would cut a long query id; positions travel instead.
            positions = np.array([str(n) for n in range(len(qids))], dtype=self._string)
            found = self.index.batch_search(positions, components, values, int(k),
                                            query_cut=self.query_cut, heap_factor=self.heap_factor,
                                            num_threads=int(threads))
            # Results do not come back in query order: each hit names its query (our position string).
            for hits in found:
                if hits:
                    run[qids[int(hits[0][0])]] = [(doc_id, float(score)) for _, score, doc_id in hits]
        return run
