"""One writer per Milvus collection: a lease row (``writer``) in the collection's side collection.

Milvus has no compare-and-set, so the lease is taken as a lock file is on a shared disk without one: read the row;
refuse when another live writer holds it; write our token; wait :data:`SETTLE_SECONDS`; read it back. Two writers
that both found the row free wrote within moments of each other, and both read back the same last token, so only
one goes on. The holder renews the row before every batch it commits and checks that the token is still its own
(a writer whose lease was taken over stops with an error instead of mixing rows). A lease is live while its
process runs (same host) or, from another host, while it was renewed within :data:`STALE_SECONDS`; a killed
writer's lease is taken over by the next export, as a dead process's lock file is.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from .milvus_manifest import delete_row, read_row, write_row
from .milvus_uri import MilvusError, MilvusLocation

logger = logging.getLogger(__name__)

WRITER_KEY = "writer"
SETTLE_SECONDS = 1.0
STALE_SECONDS = 300.0


def _alive(holder: dict) -> bool:
    pid, host = holder.get("pid"), holder.get("host")
    if host != socket.gethostname():
        beat = holder.get("beat")
        return isinstance(beat, (int, float)) and time.time() - beat < STALE_SECONDS
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """The lease of one export; :meth:`renew` before each commit."""

    def __init__(self, client, location: MilvusLocation) -> None:
        self.client, self.location = client, location
        self.me = {"token": uuid.uuid4().hex, "pid": os.getpid(), "host": socket.gethostname()}

    def _refuse(self, holder: dict, how: str) -> None:
        raise MilvusError(f"{self.location.uri}: another process {how} (pid {holder.get('pid')} on "
                          f"{holder.get('host')}); wait for it to finish, or export to another collection name")

    def take(self) -> None:
        holder = read_row(self.client, self.location, WRITER_KEY)
        if holder is not None and _alive(holder):
            self._refuse(holder, "is exporting into it")
        if holder is not None:
            logger.warning("%s: taking over the export lease of process %s, which is no longer running",
                           self.location.uri, holder.get("pid"))
        write_row(self.client, self.location, WRITER_KEY, {**self.me, "beat": time.time()})
        time.sleep(SETTLE_SECONDS)
        self.check()

    def check(self) -> None:
        holder = read_row(self.client, self.location, WRITER_KEY) or {}
        if holder.get("token") != self.me["token"]:
            self._refuse(holder, "took over this collection's export")

    def renew(self) -> None:
        self.check()
        write_row(self.client, self.location, WRITER_KEY, {**self.me, "beat": time.time()})

    def release(self) -> None:
        holder = read_row(self.client, self.location, WRITER_KEY) or {}
        if holder.get("token") == self.me["token"]:
            delete_row(self.client, self.location, WRITER_KEY)


@contextmanager
def writer_lease(client, location: MilvusLocation) -> Iterator[Lease]:
    """Hold the collection's writer lease for the block (released at its end, kept by a killed process)."""
    lease = Lease(client, location)
    lease.take()
    try:
        yield lease
    finally:
        try:
            lease.release()
        except MilvusError as exc:  # the server went away: the lease goes stale on its own
            logger.warning("%s", exc)
