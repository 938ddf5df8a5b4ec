"""Serve indexes over HTTP: pyserini's REST contract, batched query encoding, explanations, metrics, MCP, a page.

    python -m laconic_pyserini.serve --index NAME=LOCATION [--index NAME=LOCATION …] [--host 127.0.0.1]
        [--port 8000] [--quantize none|int8|int4|q8_0|q4_0] [--dtype auto|fp32|bf16] [--threads N]
        [--max-batch 16] [--batch-wait-ms 5] [--no-batching] [--queue-bound 64] [--request-timeout-s 30] …

The API key is read from $LACONIC_API_KEY or the file $LACONIC_API_KEY_FILE names, never from the command line;
binding an address other than loopback needs one. SIGTERM (or Ctrl-C) stops accepting connections and answers
every request already in flight before the process exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields

from ..errors import cli
from .settings import Inference, Limits, ServeSettings, parse_index, read_api_key


LIMIT_HELP = {
    "max_batch": "query texts encoded together, at most",
    "batch_wait_ms": "how long a batch waits for mates after its first text",
    "queue_bound": "requests admitted at once; one more is answered 429 with Retry-After at once",
    "request_timeout_s": "a request's deadline (504 after it); also how long SIGTERM waits for requests in flight",
    "backend_timeout_s": "one search backend call's deadline (503 naming the index after it)",
    "search_threads": "threads that run searches",
    "max_query_chars": "a query text's length (400 beyond it)",
    "max_hits": "the largest hits (400 beyond it)",
    "max_queries": "queries in one POST search (400 beyond it)",
    "max_body_bytes": "a request body's size (400 beyond it)",
    "retry_after_s": "the Retry-After of a 429",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", action="append", required=True, metavar="NAME=LOCATION",
                        help="an index to serve under NAME (a folder built by laconic_pyserini.index, or milvus://…)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--cors-origin", action="append", default=[], help="allow this browser origin (none: no CORS)")
    parser.add_argument("--no-mcp", action="store_true", help="do not serve the MCP tools at /mcp")
    parser.add_argument("--mcp-stdio", action="store_true", help="serve only the MCP tools, over stdin/stdout")
    inference = parser.add_argument_group("query encoding")
    inference.add_argument("--quantize", default="none", help="none, int8, int4 (torch) or q8_0, q4_0 (llama.cpp)")
    inference.add_argument("--dtype", default="auto", help="auto (what this CPU runs fast), fp32 or bf16")
    inference.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    limits = parser.add_argument_group("limits (defaults suit a 2-core CPU)")
    for field in fields(Limits):
        if field.name == "batching":
            limits.add_argument("--no-batching", action="store_true", help="encode every query alone")
            continue
        limits.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default,
                            help=f"{LIMIT_HELP[field.name]} (default {field.default})")
    return parser


def settings_from(args: argparse.Namespace) -> ServeSettings:
    limits = {f.name: getattr(args, f.name) for f in fields(Limits) if f.name != "batching"}
    return ServeSettings(indexes=dict(parse_index(value) for value in args.index), host=args.host, port=args.port,
                         inference=Inference(args.quantize, args.dtype, args.threads),
                         limits=Limits(**limits, batching=not args.no_batching), api_key=read_api_key(),
                         cors_origins=tuple(args.cors_origin), mcp_http=not args.no_mcp)


def run(settings: ServeSettings) -> None:
    """Open every index, then serve until SIGTERM / SIGINT (in-flight requests are answered first)."""
    import uvicorn

    from .catalog import open_indexes
    from .mcp_tools import build_mcp
    from .app import create_app
    from .service import SearchService

    if settings.inference.threads:
        import torch

        torch.set_num_threads(settings.inference.threads)
    service = SearchService(open_indexes(settings.indexes, settings.inference), settings.limits)
    mcp_app = None
    if settings.mcp_http:
        mcp_app = build_mcp(service).streamable_http_app(streamable_http_path="/", host=settings.host)
    app = create_app(service, settings, mcp_app=mcp_app)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                            timeout_graceful_shutdown=settings.limits.request_timeout_s + 5)
    uvicorn.Server(config).run()


def run_mcp_stdio(settings: ServeSettings) -> None:
    """The MCP tools over stdin/stdout (logs go to stderr)."""
    from .catalog import open_indexes
    from .mcp_tools import build_mcp
    from .service import SearchService

    service = SearchService(open_indexes(settings.indexes, settings.inference), settings.limits)
    build_mcp(service, start_service=True).run("stdio")


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.mcp_stdio:
        run_mcp_stdio(settings)
    else:
        run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
