"""The search service's core, without HTTP: admission, batched encoding, searches on a bounded pool, documents
and explanations. The REST routes, the MCP tools and the page all call this.

A request is admitted only while fewer than ``queue_bound`` are in flight, else it is refused at once (429). An
admitted query text joins its encoder's batch (:class:`EncodeBatcher`), then its search runs on a pool of
``search_threads`` threads with ``searcher.search_encoded`` (what ``batch_search`` runs per query), all within the
request's deadline. A failing search backend answers 503 naming its index; the other indexes keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import describe
from .batcher import EncodeBatcher
from .catalog import ServedIndex, encode_texts, searchable
from .documents import DocumentNotFound, DocumentStore
from .explain import explanation, query_terms
from .metrics import Metrics
from .settings import Limits

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service answers with ``status`` and ``{"error": message}`` (and ``headers``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class SearchService:
    """Searches the served indexes; create it, ``await start()`` inside the event loop, ``await stop()`` at the end."""

    def __init__(self, indexes: dict[str, ServedIndex], limits: Limits, metrics: Metrics | None = None) -> None:
        self.indexes, self.limits = indexes, limits
        self.metrics = metrics or Metrics()
        self.documents = {name: DocumentStore(index.searcher, index.manifest) for name, index in indexes.items()}
        self.in_flight = 0
        self.ready = False
        self._batchers: dict[str, EncodeBatcher] = {}
        self._pool = ThreadPoolExecutor(limits.search_threads, thread_name_prefix="search")

    async def start(self) -> None:
        """One batcher per encoder group (its first index encodes for the group), each encoder warmed by one query
        so that the first request does not pay for loading the model."""
        for index in self.indexes.values():
            group = index.encoder_group
            if group is None or group in self._batchers:
                continue
            batcher = EncodeBatcher(lambda texts, s=index.searcher: encode_texts(s, texts),
                                    max_batch=self.limits.batch_size, wait_s=self.limits.batch_wait_s,
                                    on_batch=lambda n, g=index.name: self.metrics.batch_size.labels(g).observe(n),
                                    name=f"encode-{index.name}")
            batcher.start()
            self._batchers[group] = batcher
            await batcher.encode("warm up")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for batcher in self._batchers.values():
            await batcher.close()
        self._pool.shutdown(wait=False, cancel_futures=True)  # a hung backend call must not hold the exit

    # ------------------------------------------------------------------------------------------ admission

    @contextlib.contextmanager
    def admitted(self):
        """Hold one of the ``queue_bound`` places, or raise 429 with Retry-After at once."""
        if self.in_flight >= self.limits.queue_bound:
            self.metrics.rejections.labels("queue_full").inc()
            raise ServiceError(429, f"the service is at its queue bound ({self.limits.queue_bound} requests in "
                                    f"flight); retry after {self.limits.retry_after_s} s",
                               {"Retry-After": str(self.limits.retry_after_s)})
        self.in_flight += 1
        self.metrics.queue_depth.set(self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            self.metrics.queue_depth.set(self.in_flight)

    async def within_deadline(self, work):
        """Await ``work`` within the request deadline (504 after it)."""
        try:
            return await asyncio.wait_for(work, self.limits.request_timeout_s)
        except TimeoutError:
            self.metrics.rejections.labels("deadline").inc()
            raise ServiceError(504, f"the request took longer than its deadline of {self.limits.request_timeout_s} s "
                                    "(--request-timeout-s)") from None

    # ------------------------------------------------------------------------------------------ checks

    def index(self, name: str) -> ServedIndex:
        if name not in self.indexes:
            raise ServiceError(400, f"index {name!r} is not served here; served: {', '.join(self.indexes)}")
        return self.indexes[name]

    def check_hits(self, hits: int) -> int:
        if hits < 1 or hits > self.limits.max_hits:
            raise ServiceError(400, f"hits {hits}: must be between 1 and {self.limits.max_hits} (--max-hits)")
        return hits

    def check_query(self, index: ServedIndex, query: Any) -> Any:
        """A text within ``max_query_chars``, or a ``{term: weight}`` vector the index takes."""
        if isinstance(query, str):
            if not query.strip():
                raise ServiceError(400, "Parameter 'query' is required")
            if len(query) > self.limits.max_query_chars:
                raise ServiceError(400, f"the query has {len(query)} characters; the limit is "
                                        f"{self.limits.max_query_chars} (--max-query-chars)")
            return query
        if isinstance(query, dict) and getattr(index.searcher, "queries", None) is not None:
            if len(query) > self.limits.max_query_chars:
                raise ServiceError(400, f"the query vector has {len(query)} terms; the limit is "
                                        f"{self.limits.max_query_chars} (--max-query-chars)")
            bad = [t for t, w in query.items() if not isinstance(w, numbers.Real) or isinstance(w, bool)
                   or not math.isfinite(w)]
            if bad:
                raise ServiceError(422, f"query vector: the weight of {bad[0]!r} is not a finite number")
            try:
                return index.searcher.queries.vectors({"q": query})["q"]
            except (ValueError, TypeError) as exc:
                raise ServiceError(422, f"query vector: {describe(exc)}") from None
        if isinstance(query, dict):
            raise ServiceError(422, f"index {index.name!r} ({index.kind}) takes query texts only, not vectors")
        raise ServiceError(422, f"a query is a text or a {{term: weight}} object, not {type(query).__name__}")

    # ------------------------------------------------------------------------------------------ search

    async def vector_of(self, index: ServedIndex, query: Any) -> Any:
        """The query as its searcher's ``search_encoded`` takes it: a text encoded in a batch, or a vector."""
        if not isinstance(query, str) or index.encoder_group is None:
            return query
        try:
            return await self._batchers[index.encoder_group].encode(query)
        except Exception as exc:
            raise self.backend_failed(index, exc) from None

    def backend_failed(self, index: ServedIndex, exc: BaseException) -> ServiceError:
        logger.exception("index %s failed", index.name, exc_info=exc)
        index.healthy, index.failure = False, describe(exc)
        self.metrics.rejections.labels("backend").inc()
        return ServiceError(503, f"index {index.name!r} is unavailable: {describe(exc)}; the other indexes still "
                                 "serve")

    async def hits_of(self, index: ServedIndex, vector: Any, hits: int) -> list[tuple[str, float]]:
        """The index's top ``hits``; a backend that fails or outlasts ``backend_timeout_s`` is a 503 naming it."""
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._pool, lambda: index.searcher.search_encoded(
            searchable(index.searcher, vector), hits))
        try:
            found = await asyncio.wait_for(call, self.limits.backend_timeout_s)
        except TimeoutError:
            raise self.backend_failed(index, TimeoutError(
                f"no answer within {self.limits.backend_timeout_s} s (--backend-timeout-s)")) from None
        except Exception as exc:
            raise self.backend_failed(index, exc) from None
        index.healthy, index.failure = True, None
        return [(docid, float(score)) for docid, score in found]

    async def search(self, name: str, query: Any, hits: int = 10, *, parse: bool = True,
                     explain: bool = False) -> dict:
        """One query's ``{"text", "candidates", ["terms"]}``: its top ``hits`` with rank, document and (with
        ``explain``, sparse indexes) the terms that matched."""
        index = self.index(name)
        query = self.check_query(index, query)
        vector = await self.vector_of(index, query)
        found = await self.hits_of(index, vector, self.check_hits(hits))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.answer, index, query, vector, found, parse, explain)

    def answer(self, index: ServedIndex, query: Any, vector: Any, found: list, parse: bool, explain: bool) -> dict:
        """The response body of one query's hits (documents read, explanations made)."""
        store = self.documents[index.name]
        candidates = []
        for rank, (docid, score) in enumerate(found, start=1):
            candidate = {"docid": docid, "score": score, "rank": rank, "doc": self.doc_payload(store, docid, parse)}
            if explain and index.sparse:
                candidate["explanation"] = explanation(vector, store.vector(docid))
            candidates.append(candidate)
        body = {"text": query if isinstance(query, str) else None, "candidates": candidates}
        if explain and index.sparse:
            body["terms"] = query_terms(body["text"], vector)
        return body

    @staticmethod
    def doc_payload(store: DocumentStore, docid: str, parse: bool) -> Any:
        try:
            document = store.document(docid)
        except DocumentNotFound:
            return None
        if parse:
            return {"id": document["id"], "title": document["title"], "text": document["text"]}
        import json

        return json.dumps({"_id": document["id"], "title": document["title"], "text": document["text"]})

    async def document(self, name: str, docid: str, parse: bool = True) -> Any:
        index = self.index(name)
        store = self.documents[index.name]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._pool, store.document, docid)
        except DocumentNotFound:
            raise ServiceError(404, f"Document not found: {docid}") from None
        return await loop.run_in_executor(self._pool, self.doc_payload, store, docid, parse)
