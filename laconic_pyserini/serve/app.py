"""The HTTP face of the service (FastAPI): pyserini's REST contract and what serving needs beside it.

- ``GET /v1/{index}/search?query=&hits=&parse=[&explain=]`` and ``GET /v1/{index}/doc/{docid}?parse=``: pyserini
  2.x's fields (``api``, ``index``, ``query.text``, ``candidates[{docid, score, rank, doc}]``) and status codes
  (400 for a bad parameter or an index not served, 404 for a missing document, 401, 429 with Retry-After);
- ``POST /v1/{index}/search``: ``{"queries": {qid: text or {term: weight}}, "hits", "explain"}``;
- ``GET /v1/indexes`` (the served indexes and their manifests), ``/health``, ``/ready``, ``/metrics``, ``/docs``
  (OpenAPI) and the page at ``/``.

Errors are ``{"error": …}``. With an API key set, every route but ``/``, ``/health`` and ``/ready`` needs it in
``X-API-Key`` or ``Authorization: Bearer``, compared in constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from .service import SearchService, ServiceError
from .settings import ServeSettings

OPEN_PATHS = ("/", "/health", "/ready")


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def flag(raw: str | None, default: bool, name: str) -> bool:
    """pyserini's boolean query parameters: ``true`` or ``false``, else 400."""
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered not in ("true", "false"):
        raise ServiceError(400, f"Parameter '{name}' must be 'true' or 'false'")
    return lowered == "true"


def hits_param(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return 10
    try:
        return int(raw)
    except ValueError:
        raise ServiceError(400, "Parameter 'hits' must be an integer") from None


def authorised(request: Request, key: str) -> bool:
    given = request.headers.get("x-api-key")
    if given is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


def create_app(service: SearchService, settings: ServeSettings, *, mcp_app=None) -> FastAPI:
    """The ASGI app over a service whose indexes are open; its lifespan starts and stops the service (and the MCP
    session manager, when ``mcp_app`` is given)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async with contextlib.AsyncExitStack() as stack:
            if mcp_app is not None:
                await stack.enter_async_context(mcp_app.router.lifespan_context(mcp_app))
            await service.start()
            try:
                yield
            finally:
                await service.stop()

    app = FastAPI(title="laconic-pyserini search", version="v1", lifespan=lifespan)
    add_middleware(app, service, settings)
    add_errors(app)
    add_search_routes(app, service)
    add_service_routes(app, service)
    if mcp_app is not None:
        app.mount("/mcp", mcp_app)
    return app


def add_middleware(app: FastAPI, service: SearchService, settings: ServeSettings) -> None:
    limit = settings.limits.max_body_bytes

    @app.middleware("http")
    async def guard(request: Request, call_next):
        start = time.perf_counter()
        if settings.api_key is not None and request.url.path not in OPEN_PATHS \
                and not authorised(request, settings.api_key):
            service.metrics.rejections.labels("unauthorised").inc()
            response = error(401, "missing or wrong API key: send it in X-API-Key or Authorization: Bearer")
        elif int(request.headers.get("content-length") or 0) > limit:
            service.metrics.rejections.labels("body_size").inc()
            response = error(400, f"the request body is larger than {limit} bytes (--max-body-bytes)")
        else:
            response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "other")
        service.metrics.latency.labels(route, str(response.status_code)).observe(time.perf_counter() - start)
        return response

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"])


def add_errors(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")


def add_search_routes(app: FastAPI, service: SearchService) -> None:
    @app.get("/v1/{index}/search")
    async def search(index: str, query: str | None = None, hits: str | None = None, parse: str | None = None,
                     explain: str | None = None):
        """pyserini's search: the top ``hits`` of one query text (``explain=true``: why each matched)."""
        parse_flag, explain_flag, k = flag(parse, True, "parse"), flag(explain, False, "explain"), hits_param(hits)
        if query is None or not query.strip():
            raise ServiceError(400, "Parameter 'query' is required")
        with service.admitted():
            body = await service.within_deadline(service.search(index, query, k, parse=parse_flag,
                                                                explain=explain_flag))
        return {"api": "v1", "index": index, "query": {"text": query, **({"terms": body["terms"]}
                                                                         if "terms" in body else {})},
                "candidates": body["candidates"]}

    @app.post("/v1/{index}/search")
    async def search_many(index: str, request: Request):
        """Many queries at once: ``{"queries": {qid: text or {term: weight}}, "hits": 10, "explain": false}``."""
        queries, k, explain_flag = await read_search_body(request, service)
        with service.admitted():
            async def one(query):
                return await service.search(index, query, k, explain=explain_flag)

            answers = await service.within_deadline(asyncio.gather(*(one(q) for q in queries.values())))
        return {"api": "v1", "index": index, "results": {
            qid: {"query": {"text": a["text"], **({"terms": a["terms"]} if "terms" in a else {})},
                  "candidates": a["candidates"]} for qid, a in zip(queries, answers)}}

    @app.get("/v1/{index}/doc/{docid}")
    async def document(index: str, docid: str, parse: str | None = None):
        """pyserini's document route."""
        parse_flag = flag(parse, True, "parse")
        with service.admitted():
            doc = await service.within_deadline(service.document(index, docid, parse_flag))
        return {"api": "v1", "index": index, "docid": docid, "doc": doc}


async def read_search_body(request: Request, service: SearchService) -> tuple[dict, int, bool]:
    """A POST search body, checked: its size, JSON, ``queries`` (a non-empty object within ``max_queries``),
    ``hits`` and ``explain``."""
    limits = service.limits
    raw = await request.body()
    if len(raw) > limits.max_body_bytes:
        raise ServiceError(400, f"the request body is larger than {limits.max_body_bytes} bytes (--max-body-bytes)")
    try:
        body = json.loads(raw)
    except ValueError:
        raise ServiceError(422, "the body is not JSON; send {\"queries\": {qid: text}}") from None
    queries = body.get("queries") if isinstance(body, dict) else None
    if not isinstance(queries, dict) or not queries:
        raise ServiceError(422, "body.queries: expected a non-empty object {qid: text or {term: weight}}")
    if len(queries) > limits.max_queries:
        raise ServiceError(400, f"{len(queries)} queries in one request; the limit is {limits.max_queries} "
                                "(--max-queries)")
    hits, explain = body.get("hits", 10), body.get("explain", False)
    if not isinstance(hits, int) or isinstance(hits, bool):
        raise ServiceError(422, "body.hits: expected an integer")
    if not isinstance(explain, bool):
        raise ServiceError(422, "body.explain: expected true or false")
    return queries, hits, explain


def add_service_routes(app: FastAPI, service: SearchService) -> None:
    @app.get("/v1/indexes")
    async def indexes():
        """The served indexes: kind, backend, encoder, fingerprint, document count, health and manifest."""
        return {"api": "v1", "indexes": [index.summary() for index in service.indexes.values()]}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        failing = [name for name, index in service.indexes.items() if not index.healthy]
        if not service.ready:
            return error(503, "starting: encoders are loading")
        return {"status": "ready", "failing": failing}

    @app.get("/metrics")
    async def metrics():
        return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
