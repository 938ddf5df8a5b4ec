"""One searcher protocol and one registry of backends, keyed by index kind.

A user names an index location; :func:`open_searcher` reads its ``manifest.json`` (``kind``), or recognises a
location scheme such as ``milvus://…``, and opens the backend registered for it (the first registered for a kind is
its default; ``backend=`` picks another). Each backend is one entry here naming its module (imported only when
opened, so the JVM, faiss or Seismic load only for the index that needs them) and the CLI options it takes, which
``python -m laconic_pyserini.search`` offers. Adding a backend is one module plus one :func:`register` call below.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..fusion import FusionSettings
from ..index.manifest import IndexFolderError, check_kind_holds, read_index_manifest
from ..run import Hits, Run


class Searcher(Protocol):
    """What every backend's searcher offers.

    ``batch_search`` answers many queries at once (texts, or ``{term: impact}`` vectors where the backend takes
    them). ``encode_query`` and ``search_encoded`` are one query's two halves, timed apart by serving;
    ``encodes_queries`` is False where the engine analyses the text inside its search (BM25).
    """

    encodes_queries: bool

    def batch_search(self, queries: dict[str, Any], k: int, threads: int = 1) -> Run: ...

    def encode_query(self, text: str) -> Any: ...

    def search_encoded(self, encoded: Any, k: int) -> Hits: ...


@dataclass(frozen=True)
class Option:
    """A searcher keyword the search CLI exposes as ``--flag`` (default None: the searcher's own default)."""

    flag: str
    type: Callable[[str], Any] = str
    help: str = ""

    @property
    def keyword(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


@dataclass(frozen=True)
class Backend:
    """One way to search one index kind."""

    kind: str                       # the manifest's ``kind`` (or the scheme's kind) this backend searches
    name: str                       # what ``--backend`` calls it
    opener: Callable[..., Searcher]  # opener(location, **options); imports its module only when called
    options: tuple[Option, ...] = ()
    takes_vectors: bool = False     # batch_search also takes pre-encoded {term: impact} vectors
    scheme: str | None = None       # a location ``SCHEME://…`` that has no manifest.json folder

    def open(self, location: str | os.PathLike, **options) -> Searcher:
        return self.opener(location, **options)

    def takes(self, keyword: str) -> bool:
        return any(option.keyword == keyword for option in self.options)


class SearcherError(IndexFolderError):
    """No searcher fits the index, or the options given do not fit its searcher."""


REGISTRY: dict[str, list[Backend]] = {}


def register(backend: Backend) -> None:
    """Add a backend (after those already registered for its kind); a (kind, name) pair is registered once."""
    entries = REGISTRY.setdefault(backend.kind, [])
    if any(entry.name == backend.name for entry in entries):
        raise ValueError(f"a {backend.kind!r} backend named {backend.name!r} is already registered")
    entries.append(backend)


def all_backends() -> list[Backend]:
    return [backend for entries in REGISTRY.values() for backend in entries]


def kind_of(location: str | os.PathLike) -> str:
    """The index kind at ``location``: its scheme's kind, or its folder's ``manifest.json`` ``kind``."""
    text = str(location)
    # A transport suffix keeps its scheme's backend: milvus+tls:// is searched as milvus://.
    scheme = text.split("://", 1)[0].split("+", 1)[0].lower() if "://" in text else None
    for backend in all_backends():
        if backend.scheme and scheme == backend.scheme:
            return backend.kind
    return check_kind_holds(location, read_index_manifest(location))


def find_backend(kind: str, name: str | None = None, *, where: str = "the index") -> Backend:
    """The backend ``name`` (default: the first registered) for an index ``kind``; a clear error otherwise."""
    entries = REGISTRY.get(kind, [])
    if not entries:
        known = ", ".join(sorted(REGISTRY))
        raise SearcherError(f"{where}: index kind {kind!r} has no searcher in this version (known kinds: {known}); "
                            "rebuild the index with `python -m laconic_pyserini.index`")
    if name is None:
        return entries[0]
    for entry in entries:
        if entry.name == name:
            return entry
    choices = " or ".join(entry.name for entry in entries)
    raise SearcherError(f"{where}: {index_phrase(kind)} is searched with {choices}, not --backend {name}")


def index_phrase(kind: str) -> str:
    """``an 'impact' index``, ``a 'bm25' index``: how messages name an index of ``kind``."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind!r} index"


def open_searcher(location: str | os.PathLike | Sequence[str | os.PathLike], *, backend: str | None = None,
                  fusion: FusionSettings | None = None, **options) -> Searcher:
    """Open the searcher that fits the index at ``location`` (``backend`` picks among several for one kind).

    Several locations open a fused searcher (:mod:`.fused`): each index is searched by its own default backend,
    with the ``options`` it takes, and the runs are fused as ``fusion`` says (default: RRF with k = 60, each part
    searched as deep as the hits asked for).
    """
    if isinstance(location, (str, os.PathLike)):
        return find_backend(kind_of(location), backend, where=str(location)).open(location, **options)
    if backend is not None:
        raise SearcherError("backend= picks the backend of one index; a fused searcher opens each index with "
                            "its default")
    return open_fused(list(location), fusion or FusionSettings(depth=None), **options)


def open_fused(locations: Sequence[str | os.PathLike], fusion: FusionSettings, **options) -> Searcher:
    """A fused searcher over ``locations``, each opened by its kind's default backend with the ``options`` it
    takes; an option that no part takes is an error."""
    from .fused import FusedSearcher

    backends = [find_backend(kind_of(location), where=str(location)) for location in locations]
    unused = sorted(keyword for keyword in options if not any(b.takes(keyword) for b in backends))
    if unused:
        raise SearcherError(f"{', '.join(unused)}: taken by none of the fused indexes "
                            f"({', '.join(b.kind for b in backends)}); leave it out")
    parts = []
    try:
        for backend, location in zip(backends, locations):
            parts.append(backend.open(location, **{key: value for key, value in options.items()
                                                   if backend.takes(key)}))
    except BaseException:
        for part in parts:
            getattr(part, "close", lambda: None)()
        raise
    return FusedSearcher(parts, fusion, [str(location) for location in locations])


# Openers import their module when called: opening a BM25 index never loads faiss, a faiss index never the JVM.
def _bm25(location, **options) -> Searcher:
    from .bm25 import Bm25Searcher

    return Bm25Searcher(location, **options)


def _lucene_impact(location, **options) -> Searcher:
    from .impact import LaconicSearcher

    return LaconicSearcher(location, **options)


def _seismic(location, **options) -> Searcher:
    from .seismic import SeismicSearcher

    return SeismicSearcher(location, **options)


def _faiss(location, **options) -> Searcher:
    from .faiss import FaissSearcher

    return FaissSearcher(location, **options)


def _milvus(location, **options) -> Searcher:
    from .milvus import MilvusSearcher

    return MilvusSearcher(str(location), **options)


_ENCODER = Option("--encoder", help="query encoder (spec name, model folder or hub id); default: the index's own")
_BATCH = Option("--batch-size", int, "query-encoding batch size (default 32)")
_DEVICE = Option("--device", help="query-encoding device (default cpu)")
_DTYPE = Option("--dtype", help="query-encoding dtype: auto (default: what this CPU runs fast), fp32, bf16, or fp16 "
                                "(GPU only)")
_QUERY_WEIGHTS = Option("--query-weights", help="seismic, milvus sparse: impact (integer, Lucene's scores; default) or "
                                                "float (the encoder's weights, as the LACONIC authors search)")
_QUANTIZE = Option("--quantize", help="query encoding, decoder (LACONIC) encoders on CPU: none (default), int8 or "
                                      "int4; the index may be full precision (the run's manifest records both)")

_UNRECORDED = Option("--unrecorded-encoder", help="accept: search an index that records no encoder fingerprint "
                                                  "(its encoder's weights cannot be checked); default: refuse it")

register(Backend("bm25", "lucene", _bm25))
register(Backend("impact", "lucene", _lucene_impact,
                 (_ENCODER, _BATCH, _DEVICE, _DTYPE, _QUANTIZE, _UNRECORDED), takes_vectors=True))
register(Backend("impact", "seismic", _seismic,
                 (_ENCODER, _BATCH, _DEVICE, _DTYPE, _QUANTIZE, _UNRECORDED,
                  Option("--query-cut", int, "seismic: query terms looked up (default 10)"),
                  Option("--heap-factor", float, "seismic: block-skipping factor (default 0.7)"), _QUERY_WEIGHTS),
                 takes_vectors=True))
register(Backend("faiss", "faiss", _faiss,
                 (_ENCODER, _BATCH, _DEVICE, _DTYPE, _UNRECORDED, Option("--ef-search", int, "faiss HNSW: search breadth (default: the "
                                                                        "index's)"))))
register(Backend("milvus", "milvus", _milvus,
                 (_ENCODER, _BATCH, _DEVICE, _QUERY_WEIGHTS, _UNRECORDED), takes_vectors=True, scheme="milvus"))
