"""Passing accepted control connections from the parent of ``--workers N`` to a worker.

The parent accepts a connection on the manifest's control socket, makes the
access checks (``control_access``) and reads its first request. When that is
an ``invoke``, it passes the connection's descriptor to the least-loaded
worker (``SCM_RIGHTS`` over a ``SOCK_SEQPACKET`` socket pair, the worker's
stdin) along with the bytes it had read, and the client talks to that worker
directly for the rest of the connection: the parent no longer relays its
invocations (docs/workers.md, "Connections handed to a worker").

Messages on the pair:

* parent -> worker: ``id`` (8 bytes, big-endian) + the bytes already read
  (at most ``MAX_PREFIX``), with one descriptor attached;
* worker -> parent: the ``id`` of a connection that is over.

The parent keeps a duplicate of every descriptor it passed until the worker
says the connection is over, so that a worker that dies can still tell the
client why (``WorkerLost``) instead of a bare end of file; the worker shuts a
connection down (``SHUT_RDWR``) when it is done with it, so that duplicate
never keeps a client waiting. End of file on the pair tells a worker its
parent is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
from collections.abc import Callable

__all__ = [
    "HEADER",
    "MAX_PREFIX",
    "ConnectionReceiver",
    "channel",
    "closed_ids",
    "is_channel",
    "send_connection",
]

HEADER = struct.Struct("!Q")
#: the most bytes of a connection the parent passes along with it; a longer first
#: request (large invocation arguments) is relayed by the parent instead
MAX_PREFIX = 60 * 1024
_RECEIVE = HEADER.size + MAX_PREFIX

Adopt = Callable[[socket.socket, bytes, Callable[[], object]], None]


def channel() -> tuple[socket.socket, socket.socket]:
    """The parent's end (non-blocking) and the worker's end (its stdin)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent.setblocking(False)
    return parent, child


def send_connection(chan: socket.socket, conn_id: int, fd: int, data: bytes) -> None:
    """Pass ``fd`` and the bytes read from it; raises ``OSError`` (``BlockingIOError``
    when the worker has not taken the previous ones yet)."""
    socket.send_fds(chan, [HEADER.pack(conn_id) + data], [fd])


def closed_ids(chan: socket.socket) -> list[int] | None:
    """The ids the worker reported over since the last call; None at end of file."""
    ids: list[int] = []
    while True:
        try:
            message = chan.recv(4096)
        except BlockingIOError:
            return ids
        except OSError:
            return None
        if not message:
            return None
        ids.extend(n for (n,) in HEADER.iter_unpack(message[: len(message) // 8 * 8]))


def is_channel(fd: int) -> bool:
    """Whether ``fd`` is the worker's end of a ``channel()``."""
    try:
        with socket.socket(fileno=fd) as probe:
            try:
                return probe.type == socket.SOCK_SEQPACKET
            finally:
                probe.detach()
    except OSError:
        return False


class ConnectionReceiver:
    """The worker's end: adopts every connection the parent passes; ``on_eof`` when
    the parent is gone."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        adopt: Adopt,
        on_eof: Callable[[], object],
    ) -> None:
        self._loop = loop
        # blocking: a report that a connection is over must not be dropped (the
        # parent reads them as they come); receiving never waits (MSG_DONTWAIT)
        self._chan = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=fd)
        self._chan.setblocking(True)
        self._adopt = adopt
        self._on_eof = on_eof
        self.received = 0
        self.done = 0
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(self._chan, _RECEIVE, 1, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data, fds, flags = b"", [], 0
            if not data and not fds:
                self.close()
                self._on_eof()
                return
            if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC) or len(data) < HEADER.size:
                for fd in fds:  # pragma: no cover - the parent sends one fd and a header
                    socket.close(fd)
                continue
            (conn_id,) = HEADER.unpack_from(data)
            for fd in fds:
                self.received += 1
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
                self._adopt(sock, data[HEADER.size :], functools.partial(self._over, conn_id))

    def close(self) -> None:
        """Stop receiving (the connections adopted so far are served to their end)."""
        if self._chan.fileno() != -1:
            self._loop.remove_reader(self._chan.fileno())
            self._chan.close()

    def _over(self, conn_id: int) -> None:
        self.done += 1
        with contextlib.suppress(OSError):  # the parent may be gone
            self._chan.send(HEADER.pack(conn_id))

    def __repr__(self) -> str:
        return f"<ConnectionReceiver received={self.received} done={self.done}>"
