"""What a search service is told: its indexes, where it listens, how it encodes queries and its limits.

Typed objects, filled by the CLI (``python -m laconic_pyserini.serve``) or by a caller. The defaults suit a 2-core
CPU: one encoding batch at a time of up to 16 queries, gathered for at most 5 ms after the first arrives (about one
splade-tiny query encoding on such a CPU, README's demo table: waiting longer than one encoding only adds
latency); two search threads (Lucene's part releases the GIL); 64 requests admitted at once, any more answered
``429`` at once; 30 s per request and 10 s per search backend call.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

#: Environment variables that may hold the service's API key (the key itself, or a file holding it).
API_KEY_ENV = "LACONIC_API_KEY"
API_KEY_FILE_ENV = "LACONIC_API_KEY_FILE"

#: An index name is a URL path segment: letters, digits, ``.``, ``_`` and ``-``.
INDEX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Inference:
    """How query encoders run: ``quantize`` (none, int8, int4, q8_0, q4_0), ``dtype`` (auto, fp32, bf16) and
    torch's thread count (None: torch's own choice)."""

    quantize: str = "none"
    dtype: str = "auto"
    threads: int | None = None


@dataclass(frozen=True)
class Limits:
    """The service's bounds; every one has a 4xx (or 429) that names it."""

    max_batch: int = 16               # queries encoded together, at most
    batch_wait_ms: float = 5.0        # how long a batch waits for mates after its first query
    batching: bool = True             # False: every query is encoded alone (max_batch 1, no wait)
    queue_bound: int = 64             # requests admitted at once; the next gets 429 + Retry-After
    request_timeout_s: float = 30.0   # a request's deadline (504 after it)
    backend_timeout_s: float = 10.0   # one search backend call's deadline (503 naming the index after it)
    search_threads: int = 2           # the pool that runs searches
    max_query_chars: int = 2_000      # a query text's length
    max_hits: int = 1_000             # ``hits``
    max_queries: int = 256            # queries in one POST search
    max_body_bytes: int = 1_000_000   # a request body
    retry_after_s: int = 1            # the Retry-After of a 429

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_bound", "search_threads", "max_query_chars", "max_hits", "max_queries",
                     "max_body_bytes", "retry_after_s"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.batch_wait_ms < 0 or self.request_timeout_s <= 0 or self.backend_timeout_s <= 0:
            raise UsageError("--batch-wait-ms must be ≥ 0, --request-timeout-s and --backend-timeout-s > 0")

    @property
    def batch_size(self) -> int:
        return self.max_batch if self.batching else 1

    @property
    def batch_wait_s(self) -> float:
        return self.batch_wait_ms / 1000 if self.batching else 0.0


@dataclass(frozen=True)
class ServeSettings:
    """A service: ``indexes`` maps each served name to its location (nothing else reaches the file system)."""

    indexes: dict[str, str]
    host: str = "127.0.0.1"
    port: int = 8000
    inference: Inference = field(default_factory=Inference)
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = field(default=None, repr=False)  # never printed with the settings
    cors_origins: tuple[str, ...] = ()
    mcp_http: bool = True             # the MCP tools over streamable HTTP at /mcp

    def __post_init__(self) -> None:
        if not self.indexes:
            raise UsageError("no index to serve; give --index NAME=LOCATION (one or more)")
        for name in self.indexes:
            if not INDEX_NAME.match(name):
                raise UsageError(f"--index {name}=…: an index name is letters, digits, '.', '_' or '-' (≤ 64)")
        if self.api_key is None and not is_loopback(self.host):
            raise UsageError(f"--host {self.host}: a non-loopback address needs an API key; set {API_KEY_ENV} or "
                             f"{API_KEY_FILE_ENV} (never a command-line value), or bind 127.0.0.1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_index(value: str) -> tuple[str, str]:
    """``NAME=LOCATION`` (a folder, or ``milvus://…``) as a pair."""
    name, sep, location = value.partition("=")
    if not sep or not name or not location:
        raise UsageError(f"--index {value}: expected NAME=LOCATION, e.g. --index scifact=indexes/scifact.splade")
    return name, location


def read_api_key(environ: dict[str, str] | None = None) -> str | None:
    """The API key from ``$LACONIC_API_KEY``, or from the file ``$LACONIC_API_KEY_FILE`` names (stripped); None
    when neither is set. An empty key is refused: it would let every request in."""
    environ = os.environ if environ is None else environ
    key = environ.get(API_KEY_ENV)
    source = API_KEY_ENV
    if key is None and environ.get(API_KEY_FILE_ENV):
        path = Path(environ[API_KEY_FILE_ENV])
        if not path.is_file():
            raise UsageError(f"{API_KEY_FILE_ENV}={path}: no such file; write the key into it or unset the variable")
        key, source = path.read_text(encoding="utf-8").strip(), str(path)
    if key is None:
        return None
    if not key.strip():
        raise UsageError(f"{source}: the API key is empty; set a key or unset the variable")
    return key.strip()
