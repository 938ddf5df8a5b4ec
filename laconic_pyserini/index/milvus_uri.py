"""Where a Milvus collection lives: the ``milvus://`` location grammar and a connected, time-bounded client.

::

    milvus://HOST:PORT/COLLECTION                 a Milvus server (standalone or a cluster's proxy), plain gRPC
    milvus://HOST:PORT/DATABASE/COLLECTION        the same, in a database other than ``default``
    milvus+tls://HOST:PORT/COLLECTION             TLS (the same as ``?secure=true``)
    milvus:///ABSOLUTE/PATH/FILE.db/COLLECTION    an embedded Milvus Lite file (no host: like ``sqlite:///``)

Query parameters: ``secure=true|false``, ``timeout=SECONDS`` (connection and every call; default 30),
``server_name=NAME`` (TLS name override), ``server_pem=PATH``, ``ca_pem=PATH`` + ``client_pem=PATH`` +
``client_key=PATH`` (mutual TLS). Credentials never go in the location (it ends up in shell history and logs):
the token comes from the environment variable ``MILVUS_TOKEN`` (``user:password`` or an API key, as pymilvus
takes it). pymilvus is imported only by :func:`connect`.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from .manifest import IndexFolderError

logger = logging.getLogger(__name__)

SCHEMES = ("milvus", "milvus+tls")
TOKEN_ENV = "MILVUS_TOKEN"
DEFAULT_TIMEOUT = 30.0
_TLS_FILES = {"server_pem": "server_pem_path", "ca_pem": "ca_pem_path", "client_pem": "client_pem_path",
              "client_key": "client_key_path"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_GRAMMAR = "milvus://HOST:PORT/[DATABASE/]COLLECTION[?secure=true&timeout=S] or milvus:///PATH/FILE.db/COLLECTION"


class MilvusError(IndexFolderError):
    """A Milvus location, server or collection that cannot be used as asked; the message says what to do."""


@dataclass(frozen=True)
class MilvusLocation:
    """A parsed ``milvus://`` location (see the module docstring)."""

    uri: str
    collection: str
    host: str | None = None
    port: int | None = None
    database: str | None = None
    lite_file: str | None = None
    secure: bool = False
    timeout: float = DEFAULT_TIMEOUT
    tls: dict = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        """What pymilvus is given as ``uri``: ``http(s)://HOST:PORT`` or the Milvus Lite file."""
        if self.lite_file:
            return self.lite_file
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}"


def is_milvus_uri(text: str | os.PathLike) -> bool:
    return isinstance(text, str) and text.split("://", 1)[0].lower() in SCHEMES and "://" in text


def parse_milvus_uri(text: str) -> MilvusLocation:
    """The location ``text`` names; a :class:`MilvusError` naming the part that is wrong otherwise."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise MilvusError(f"{text}: not a Milvus location; write {_GRAMMAR}")
    if parts.username or parts.password:
        raise MilvusError(f"{text}: credentials do not belong in the location (shell history, logs); "
                          f"export {TOKEN_ENV}=user:password (or an API key) instead")
    params = _params(text, parts.query)
    secure = scheme == "milvus+tls" or _flag(text, params.pop("secure", "false"))
    timeout = _timeout(text, params.pop("timeout", str(DEFAULT_TIMEOUT)))
    tls = {_TLS_FILES[key]: params.pop(key) for key in list(params) if key in _TLS_FILES}
    if "server_name" in params:
        tls["server_name"] = params.pop("server_name")
    if params:
        raise MilvusError(f"{text}: unknown parameter(s) {', '.join(sorted(params))}; known: secure, timeout, "
                          f"server_name, {', '.join(_TLS_FILES)}")
    segments = [s for s in parts.path.split("/") if s]
    if not parts.netloc:  # milvus:///PATH/FILE.db/COLLECTION: an embedded Milvus Lite file
        if len(segments) < 2 or not segments[-2].endswith(".db"):
            raise MilvusError(f"{text}: an embedded location is milvus:///ABSOLUTE/PATH/FILE.db/COLLECTION")
        lite_file = "/" + "/".join(segments[:-1])
        return MilvusLocation(text, _name(text, segments[-1]), lite_file=lite_file, timeout=timeout)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise MilvusError(f"{text}: needs HOST:PORT (Milvus listens on 19530 by default); write {_GRAMMAR}")
    if len(segments) not in (1, 2):
        raise MilvusError(f"{text}: the path is /COLLECTION or /DATABASE/COLLECTION; write {_GRAMMAR}")
    database = _name(text, segments[0]) if len(segments) == 2 else None
    return MilvusLocation(text, _name(text, segments[-1]), host=host, port=port, database=database,
                          secure=secure, timeout=timeout, tls=tls)


def _params(text: str, query: str) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
    params = dict(pairs)
    if len(params) != len(pairs):
        raise MilvusError(f"{text}: a parameter is given twice")
    return params


def _flag(text: str, value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise MilvusError(f"{text}: secure={value!r}; write secure=true or secure=false")


def _timeout(text: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86400:
        raise MilvusError(f"{text}: timeout={value!r}; give the seconds a call may take, e.g. timeout=30")
    return seconds


def _name(text: str, name: str) -> str:
    if not _NAME.match(name):
        raise MilvusError(f"{text}: {name!r} is not a Milvus name (a letter or _, then letters, digits or _)")
    return name


def connect(location: MilvusLocation, *, create: bool = True):
    """A ``pymilvus.MilvusClient`` for the location, or a :class:`MilvusError` within ``location.timeout``.

    An embedded file is created only when ``create`` (an export); its folder must exist and be writable (milvus-lite
    keeps a lock file beside it), which is said as such rather than as an unreachable server."""
    if location.lite_file:
        check_lite_file(location, create=create)
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MilvusError("pymilvus is not installed: pip install 'laconic-pyserini[milvus]' "
                          "(pymilvus>=2.5,<2.6; milvus-lite==2.5.1 for an embedded file)") from None
    kwargs = dict(location.tls)
    if location.secure:
        kwargs["secure"] = True
    try:
        # A connection of its own (pymilvus shares one per address, and closing any client closes it for all).
        client = MilvusClient(uri=location.endpoint, token=os.environ.get(TOKEN_ENV, ""),
                              db_name=location.database or "", timeout=location.timeout,
                              alias=f"laconic-{uuid.uuid4().hex}", **kwargs)
    except Exception as exc:  # pymilvus raises MilvusException, grpc errors or OSError depending on the failure
        where = location.lite_file or f"{location.host}:{location.port}"
        raise MilvusError(f"{location.uri}: cannot reach a Milvus server at {where} within {location.timeout:g} s "
                          f"({_reason(exc)}); check that Milvus runs there and the port is its gRPC port "
                          f"(19530 by default), or set {TOKEN_ENV} if it needs a token") from None
    if location.lite_file:
        _LITE_CLIENTS[_lite_key(location)] = _LITE_CLIENTS.get(_lite_key(location), 0) + 1
    return client


def check_lite_file(location: MilvusLocation, *, create: bool) -> None:
    path = Path(location.lite_file)
    if not path.parent.is_dir():
        raise MilvusError(f"{location.uri}: the folder {path.parent} does not exist; create it or fix the path")
    if not path.exists() and not create:
        raise MilvusError(f"{location.uri}: {path} does not exist; export a collection into it first "
                          f"(python -m laconic_pyserini.index --input DIR --index {location.uri})")
    if path.exists() and not path.is_file():
        raise MilvusError(f"{location.uri}: {path} is not a file; name a .db file")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        raise MilvusError(f"{location.uri}: {path} (or its folder) is not writable, and milvus-lite writes a lock "
                          "file beside it even to search; copy it to a writable folder")


#: Embedded (milvus-lite) files → the clients :func:`connect` has open on each in this process.
_LITE_CLIENTS: dict[str, int] = {}


def _lite_key(location: MilvusLocation) -> str:
    return os.path.realpath(location.lite_file)


def disconnect(client, location: MilvusLocation) -> None:
    """Close a client from :func:`connect`. The last one on an embedded file also stops that file's milvus-lite
    server, which pymilvus leaves running (holding the file) until the process exits."""
    client.close()
    if not location.lite_file:
        return
    key = _lite_key(location)
    _LITE_CLIENTS[key] = _LITE_CLIENTS.get(key, 1) - 1
    if _LITE_CLIENTS[key] <= 0:
        del _LITE_CLIENTS[key]
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(key)


def _reason(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return message.strip().splitlines()[0][:200] if message.strip() else type(exc).__name__
