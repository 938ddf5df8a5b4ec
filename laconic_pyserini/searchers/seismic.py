"""Approximate learned-sparse search with Seismic (``pyseismic-lsr``), built once beside an impact index.

::

    python -m laconic_pyserini.search --index DIR --backend seismic --topics scifact --output RUN \\
        [--query-cut 10] [--heap-factor 0.7]

The first search builds ``DIR/seismic/`` from the same encoded collection the Lucene index was built from (the
path is in ``DIR/manifest.json``) and later searches load it. Documents keep their integer impacts as float32
values, so a Seismic score is the same dot product Lucene computes; Seismic only skips work:

- ``query_cut``: only the query's ``query_cut`` highest-weighted terms are looked up (more: better recall, slower);
- ``heap_factor``: a block of postings is scanned only if its summary's score exceeds ``heap_factor`` times the
  current k-th best score (closer to 1: more skipping, faster, lower recall).

Build knobs (``n_postings``, ``centroid_fraction``, ``summary_energy``, ...) are Seismic's and default to its own
defaults; a build with other knobs replaces the cached one. Terms are numbered ``0..V-1`` in sorted order (the
mapping is ``DIR/seismic/vocabulary.json``); Seismic's standard index stores component ids as 16-bit integers, so
a collection with more than 65,536 distinct terms (Llama-3's 128,256-token vocabulary) uses its large-vocabulary
variant (``SeismicIndexLV``), chosen automatically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from ..index import IndexFolderError
from ..run import Hits, Run
from ..fingerprint import FINGERPRINT_KEY
from ..spec import EncoderSpec
from .queries import QueryEncoding, QueryVector

logger = logging.getLogger(__name__)

SUBDIR = "seismic"
INDEX_STEM = "index"  # Seismic appends .index.seismic
VOCABULARY = "vocabulary.json"
#: Seismic's standard index numbers components with u16.
STANDARD_MAX_TERMS = 1 << 16
#: Seismic 0.5's build defaults (its ``SeismicIndex.build_from_dataset`` signature).
BUILD_DEFAULTS = {"n_postings": 3500, "centroid_fraction": 0.1, "min_cluster_size": 2, "summary_energy": 0.4,
                  "max_fraction": 1.5, "doc_cut": 15}
DEFAULT_QUERY_CUT = 10
DEFAULT_HEAP_FACTOR = 0.7
_BATCH_DOCUMENTS = 10_000


def _seismic():
    try:
        import seismic
    except ImportError:
        raise IndexFolderError("the seismic backend needs pyseismic-lsr: pip install 'laconic-pyserini[seismic]' "
                               "(or pip install pyseismic-lsr==0.5.4)") from None
    return seismic


def build_seismic_index(index_dir: str | os.PathLike, *, large_vocabulary: bool | None = None, threads: int = 0,
                        **build) -> Path:
    """Build (or reuse, when built with the same knobs) ``index_dir/seismic`` from the index's encoded collection."""
    from ..encode.manifest import EncodeError, iter_vectors, read_manifest
    from ..impact_index import read_impact_manifest

    unknown = sorted(set(build) - set(BUILD_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown Seismic build option(s) {', '.join(unknown)}; known: {', '.join(BUILD_DEFAULTS)}")
    params = {**BUILD_DEFAULTS, **build}
    index_dir = Path(index_dir)
    manifest = read_impact_manifest(index_dir)
    folder = index_dir / SUBDIR
    cached = _read_cached(folder)
    if cached is not None and cached.get("build") == params and \
            (large_vocabulary is None or cached.get("large_vocabulary") == large_vocabulary):
        return folder
    encoded = manifest.get("encoded")
    try:
        encoding = read_manifest(encoded) if encoded else None
    except EncodeError as exc:
        raise IndexFolderError(f"{index_dir}: Seismic is built from the encoded collection the index was built "
                               f"from, and that is unusable: {exc}") from None
    if encoding is None:
        raise IndexFolderError(f"{index_dir}/manifest.json names no encoded collection; rebuild the index with "
                               "`python -m laconic_pyserini.index --input ENCODED_DIR`")
    if encoding.documents != manifest["documents"] or encoding.spec != manifest["spec"] or \
            encoding.encoder_fingerprint != manifest.get(FINGERPRINT_KEY):
        raise IndexFolderError(f"{encoded} no longer holds what {index_dir} was built from ({encoding.documents} vs "
                               f"{manifest['documents']} documents, or another encoder); rebuild the index")
    seismic = _seismic()
    import numpy as np

    start = time.perf_counter()
    terms = sorted({term for _, vector in iter_vectors(encoding) for term in vector})
    term_ids = {term: number for number, term in enumerate(terms)}
    large = len(terms) > STANDARD_MAX_TERMS if large_vocabulary is None else large_vocabulary
    if not large and len(terms) > STANDARD_MAX_TERMS:
        raise IndexFolderError(f"{len(terms)} distinct terms do not fit Seismic's standard index "
                               f"({STANDARD_MAX_TERMS}); use the large-vocabulary variant")
    dataset = (seismic.SeismicDatasetLV if large else seismic.SeismicDataset)(dim=len(terms))
    vectors = 0
    batch: list[tuple[str, dict[str, int]]] = []

    def flush() -> int:
        # Seismic wants each row's component ids increasing.
        ids = [(doc_id, sorted((term_ids[t], w) for t, w in vector.items())) for doc_id, vector in batch]
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(row) for _, row in ids])
        components = np.fromiter((c for _, row in ids for c, _ in row), dtype=np.int64, count=int(offsets[-1]))
        values = np.fromiter((w for _, row in ids for _, w in row), dtype=np.float32, count=int(offsets[-1]))
        added = dataset.add_documents_by_id([doc_id for doc_id, _ in ids], components, values, offsets)
        batch.clear()
        return int(added)

    for doc_id, vector in iter_vectors(encoding):
        batch.append((doc_id, vector))
        if len(batch) == _BATCH_DOCUMENTS:
            vectors += flush()
    if batch:
        vectors += flush()
    index_class = seismic.SeismicIndexLV if large else seismic.SeismicIndex
    index = index_class.build_from_dataset(dataset, num_threads=threads, **params)
    partial = index_dir / (SUBDIR + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    index.save(str(partial / INDEX_STEM))
    (partial / VOCABULARY).write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
    from .. import __version__

    # Empty vectors are not indexed by Seismic (they could never score above 0 anyway).
    (partial / "manifest.json").write_text(json.dumps({
        "kind": "seismic", "package_version": __version__, "seismic_version": _seismic_version(),
        "large_vocabulary": large, "build": params, "terms": len(terms), "documents": manifest["documents"],
        "indexed_vectors": vectors, "encoded": str(encoded), "build_seconds": round(time.perf_counter() - start, 1),
    }, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    logger.info("Seismic index (%s, %d terms, %d vectors) built in %.1f s -> %s",
                "large vocabulary" if large else "standard", len(terms), vectors, time.perf_counter() - start, folder)
    return folder


def _read_cached(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _seismic_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyseismic-lsr")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


class SeismicSearcher:
    """Seismic search over the vectors of an impact index; same query handling as :class:`LaconicSearcher`."""

    def __init__(self, index_dir: str | os.PathLike, encoder=None, *, query_cut: int = DEFAULT_QUERY_CUT,
                 heap_factor: float = DEFAULT_HEAP_FACTOR, batch_size: int = 32, device: str = "cpu",
                 dtype: str = "fp32", large_vocabulary: bool | None = None, build: dict | None = None) -> None:
        from ..impact_index import read_impact_manifest

        if query_cut < 1 or not 0 < heap_factor <= 1:
            raise ValueError(f"query_cut must be >= 1 and heap_factor in (0, 1]; got {query_cut}, {heap_factor}")
        self.index_dir = str(index_dir)
        manifest = read_impact_manifest(index_dir)
        self.spec = EncoderSpec.from_dict(manifest["spec"], source=f"{index_dir}/manifest.json")
        self.queries = QueryEncoding(self.spec, encoder, where=f"index {index_dir}", batch_size=batch_size,
                                     device=device, dtype=dtype, index_fingerprint=manifest.get(FINGERPRINT_KEY))
        folder = build_seismic_index(index_dir, large_vocabulary=large_vocabulary, **(build or {}))
        self.info = _read_cached(folder)
        seismic = _seismic()
        index_class = seismic.SeismicIndexLV if self.info["large_vocabulary"] else seismic.SeismicIndex
        self.index = index_class.load(str(folder / (INDEX_STEM + ".index.seismic")))
        terms = json.loads((folder / VOCABULARY).read_text(encoding="utf-8"))
        self.term_ids = {term: str(number) for number, term in enumerate(terms)}
        self.query_cut, self.heap_factor = int(query_cut), float(heap_factor)
        self._string = seismic.get_seismic_string()

    def _arrays(self, vector: QueryVector):
        import numpy as np

        kept = [(self.term_ids[t], w) for t, w in vector.items() if t in self.term_ids]
        return (np.array([c for c, _ in kept], dtype=self._string), np.array([w for _, w in kept], dtype=np.float32))

    def search(self, query: str | QueryVector, k: int = 10) -> Hits:
        return self.batch_search({"q": query}, k)["q"]

    def search_vector(self, vector: QueryVector, k: int = 10) -> Hits:
        components, values = self._arrays(vector)
        if not len(components):
            return []
        found = self.index.search("q", components, values, int(k), query_cut=self.query_cut,
                                  heap_factor=self.heap_factor)
        return [(doc_id, float(score)) for _, score, doc_id in found]

    def batch_search(self, queries: dict[str, str | QueryVector], k: int, threads: int = 1) -> Run:
        return self.batch_search_vectors(self.queries.vectors(queries), k, threads)

    def batch_search_vectors(self, vectors: dict[str, QueryVector], k: int, threads: int = 1) -> Run:
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
