"""A local Milvus server (the real C++ binary that milvus-lite 2.5 ships) on a loopback port, for tests and benchmarks.

::

    with LocalMilvus(folder) as server:          # listens on 127.0.0.1:<a free port>
        uri = f"milvus://{server.address}/scifact"

It listens on 127.0.0.1 only and keeps its data in ``folder/milvus.db``; :attr:`LocalMilvus.pid` is the server
process (its RSS is what a benchmark reports). A production deployment is a Milvus standalone or cluster instead
(docs/milvus.md); the client code is the same.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .milvus_uri import MilvusError


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalMilvus:
    """Start on ``__enter__`` (waits until the server answers, at most ``startup_timeout`` s), stop on exit."""

    def __init__(self, folder: str | os.PathLike, *, startup_timeout: float = 60.0) -> None:
        self.folder = Path(folder)
        self.startup_timeout = startup_timeout
        self.port = free_loopback_port()
        self.address = f"127.0.0.1:{self.port}"
        self._server = None

    @property
    def pid(self) -> int:
        return self._server._p.pid  # milvus-lite keeps the Popen private; the pid is all a benchmark needs

    def __enter__(self) -> "LocalMilvus":
        try:
            from milvus_lite.server import Server
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise MilvusError(f"{exc}: pip install 'laconic-pyserini[milvus]' (milvus-lite==2.5.1, "
                              "pymilvus>=2.5,<2.6, setuptools<80)") from None
        self.folder.mkdir(parents=True, exist_ok=True)
        self._server = Server(str(self.folder / "milvus.db"), address=self.address)
        if not self._server.start():
            raise MilvusError(f"the Milvus server in {self.folder} did not start (see its log above)")
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                MilvusClient(uri=f"http://{self.address}", timeout=2).close()
                return self
            except Exception:  # not listening yet: any client error means "try again" until the deadline
                if time.monotonic() > deadline:
                    self.stop()
                    raise MilvusError(f"the Milvus server on {self.address} did not answer within "
                                      f"{self.startup_timeout:g} s") from None
                time.sleep(0.5)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __exit__(self, *exc) -> None:
        self.stop()
