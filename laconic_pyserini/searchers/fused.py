"""A searcher over several indexes: each part searches, the runs are fused.

The parts search one after the other in the calling thread. Searched at once, each in a thread of its own
(:func:`in_threads`), a BM25 and an impact part in one JVM returned other hits for some queries than each
alone, and a dense part's query embeddings in a worker thread differed in their last bits from the caller's, so
a fused run no longer equalled the fusion of its parts' runs; ``parallel=True`` asks for threads anyway.

The parts are any searchers of the registry (BM25, impact, faiss, Seismic, Milvus); fusion is
:mod:`laconic_pyserini.fusion`, pyserini's arithmetic. Each part answers ``settings.depth`` hits (``None``: the
``k`` asked for), and the fused list is cut to the ``k`` asked for, so a fused searcher's run is exactly
``fusion.fuse`` over its parts' runs at that depth.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..errors import UsageError
from ..fusion import FusionSettings, fuse
from ..run import Hits, Run


def in_threads(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run each call in a thread of its own and return their results in order; the first error is raised here."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            results[number] = calls[number]()
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
        finally:
            if "jnius" in sys.modules:  # a thread pyjnius attached to the JVM must leave it before it ends
                sys.modules["jnius"].detach()

    threads = [threading.Thread(target=work, args=(number,), daemon=True) for number in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


class FusedSearcher:
    """Search every part and fuse their runs (``settings``: method, ``rrf_k``, ``alpha``, ``depth``)."""

    def __init__(self, parts: Sequence[Any], settings: FusionSettings = FusionSettings(),
                 names: Sequence[str] = (), *, parallel: bool = False) -> None:
        if len(parts) < 2:
            raise UsageError(f"a fused searcher needs at least 2 parts, got {len(parts)}")
        if settings.method == "interpolation" and len(parts) != 2:
            raise UsageError(f"interpolation fuses exactly 2 indexes, got {len(parts)}; use rrf or average")
        self.parts = list(parts)
        self.names = list(names) or [f"part {n}" for n in range(1, len(parts) + 1)]
        self.settings = settings
        self.parallel = parallel
        self.encodes_queries = any(part.encodes_queries for part in self.parts)
        self._loaded = False
        self._loading = threading.Lock()

    def _load_encoders(self) -> None:
        """Let each part load its query encoder, one after the other, before any runs in a thread: loading a
        transformers model switches torch's default device to ``meta`` process-wide for a moment, so two loads at
        once break each other ("Cannot copy out of meta tensor")."""
        with self._loading:
            if not self._loaded:
                for part in self.parts:
                    part.encode_query("warm-up")
                self._loaded = True

    def _each(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        return in_threads(calls) if self.parallel else [call() for call in calls]

    def _fused(self, runs: list[Run], k: int) -> Run:
        return fuse(runs, replace(self.settings, depth=None, k=k))

    def depth(self, k: int) -> int:
        """How many hits each part is asked for when ``k`` fused hits are wanted."""
        return k if self.settings.depth is None else self.settings.depth

    def batch_search(self, queries: dict[str, Any], k: int, threads: int = 1) -> Run:
        """Every part's ``batch_search`` at :meth:`depth` (all parts at once), fused and cut to ``k``."""
        self._load_encoders()
        depth = self.depth(k)
        runs = self._each([lambda part=part: part.batch_search(queries, depth, threads) for part in self.parts])
        fused = self._fused(runs, k)
        return {qid: fused.get(qid, []) for qid in queries}

    def encode_query(self, text: str) -> tuple:
        """Each part's encoding of ``text`` (one after the other: the sum is what a query costs to encode)."""
        return tuple(part.encode_query(text) for part in self.parts)

    def search_encoded(self, encoded: tuple, k: int) -> Hits:
        self._load_encoders()
        depth = self.depth(k)
        found = self._each([lambda part=part, e=e: part.search_encoded(e, depth)
                            for part, e in zip(self.parts, encoded)])
        return self._fused([{"q": hits} for hits in found], k).get("q", [])

    def close(self) -> None:
        for part in self.parts:
            close = getattr(part, "close", None)
            if close is not None:
                close()

