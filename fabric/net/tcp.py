"""The WASI 0.2 `tcp-socket` as a sans-IO state machine.

Theory of operation
-------------------
A `TcpSocket` is one guest socket. Its state is one of the eight states of
`TcpSocketOperationalSemantics.md` (`TcpState`), and the payload of the
state lives on the socket: the port binding once bound, the `Listener`
(accept queue) once listening, the `ConnectAttempt` while connecting, the
`PipeEnd` once connected. Every WIT method is one method here that either
returns its value or raises `SocketError(ErrorCode.X)`; the host binding
converts arguments and results and nothing else.

Transitions are data (`TRANSITIONS`): an operation is allowed in the states
listed for it, and a call from any other state is refused without changing
the state:

- a `finish-*` outside its `*-in-progress` state: `not-in-progress`;
- `start-connect` while a connect is in progress: `concurrency-conflict`;
- any other operation in the wrong state: `invalid-state`.

This follows wasmtime exactly (also where it answers `invalid-state` to a
second `start-bind` / `start-listen`), because wasi-libc aborts the guest on
codes it does not expect. Deliberate differences only answer where wasmtime
refuses: `local-address` answers in every bound-or-higher state, including
`connect-in-progress` (wasmtime: `invalid-state`, which makes wasi-libc
trap on `getsockname()` right after a non-blocking `connect()`), and
options can be read and set in every state but `closed`.

Errors are checked in the order wasmtime gives when its address check
allows the address: state and arguments (`invalid-state`,
`invalid-argument`) first, then the policy (`access-denied`), then the port
table (`address-not-bindable`, `address-in-use`). (wasmtime runs its check
first, so under a refusing check it answers `access-denied` even for a
malformed address; answering `invalid-argument` there keeps the
conformance programs of wasmtime valid under a default-deny policy.)

Connecting starts in `start-connect` (implicit ephemeral bind, policy,
finding the listener or the egress route); its outcome
(`connection-refused`, a real connect error of an egress route) is reported
by `finish-connect`, which then moves the socket to `closed`, as a kernel
reports it through SO_ERROR. A connect to a virtual listener completes at
once, before `accept`, as a kernel completes the handshake before
`accept`: the connection waits in the listener's queue, bounded by the
backlog (`set-listen-backlog-size`, default 128); a full queue refuses the
connection.

Readiness (`ready()` / `await wait_ready()`) is that of the spec:
in-progress operations are ready when their result is known, a listener
when its queue is not empty, everything else always.

Socket options are stored, validated as the WIT says (0 is
`invalid-argument`), clamped as wasmtime clamps them, inherited by accepted
sockets, and reported back. They do not change the pipe's buffering.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from .address import (
    IpAddress,
    IpAddressFamily,
    SocketAddress,
    is_valid_address_family,
    is_valid_remote_address,
    is_valid_unicast_address,
)
from .budget import SocketBudget
from .errors import ErrorCode, SocketError
from .pipe import PipeEnd
from .policy import SocketAddrUse
from .ports import PortBinding
from .readiness import Notifier, wait_until

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "DEFAULT_BACKLOG",
    "MAX_BACKLOG",
    "TRANSITIONS",
    "ConnectAttempt",
    "Listener",
    "ShutdownType",
    "TcpInputStream",
    "TcpOptions",
    "TcpOutputStream",
    "TcpSocket",
    "TcpState",
    "state_diagram",
]

SECOND = 1_000_000_000
DEFAULT_BACKLOG = 128
MAX_BACKLOG = 4096  # Linux somaxconn; larger requests are clamped silently
_I32_MAX = 2**31 - 1


class TcpState(enum.Enum):
    UNBOUND = "unbound"
    BIND_IN_PROGRESS = "bind-in-progress"
    BOUND = "bound"
    LISTEN_IN_PROGRESS = "listen-in-progress"
    LISTENING = "listening"
    CONNECT_IN_PROGRESS = "connect-in-progress"
    CONNECTED = "connected"
    CLOSED = "closed"

    # identity hash in C (members are singletons): `TRANSITIONS` is looked up
    # by state on every socket operation
    __hash__ = object.__hash__


class ShutdownType(enum.Enum):
    RECEIVE = "receive"
    SEND = "send"
    BOTH = "both"


S = TcpState
# operation -> {state it is allowed in: state after success}
TRANSITIONS: dict[str, dict[TcpState, TcpState]] = {
    "start-bind": {S.UNBOUND: S.BIND_IN_PROGRESS},
    "finish-bind": {S.BIND_IN_PROGRESS: S.BOUND},
    "start-connect": {S.UNBOUND: S.CONNECT_IN_PROGRESS, S.BOUND: S.CONNECT_IN_PROGRESS},
    "finish-connect": {S.CONNECT_IN_PROGRESS: S.CONNECTED},
    "start-listen": {S.BOUND: S.LISTEN_IN_PROGRESS},
    "finish-listen": {S.LISTEN_IN_PROGRESS: S.LISTENING},
    "accept": {S.LISTENING: S.LISTENING},
    "shutdown": {S.CONNECTED: S.CONNECTED},
}
# state after a failure (other than would-block) of an operation in its allowed state
FAILURE_STATE: dict[str, TcpState | None] = {
    "start-bind": None,  # unchanged
    "start-connect": None,  # unchanged (wasmtime validates before changing state)
    "finish-connect": S.CLOSED,
    "finish-listen": S.CLOSED,
}
_FINISH = {"finish-bind", "finish-connect", "finish-listen"}


def state_diagram() -> str:
    """A mermaid diagram of `TRANSITIONS` / `FAILURE_STATE` (docs/network.md embeds it)."""

    def sid(state: TcpState) -> str:
        return state.value.replace("-", "_")

    lines = ["stateDiagram-v2"]
    lines += [f'    state "{state.value}" as {sid(state)}' for state in TcpState]
    lines.append(f"    [*] --> {sid(TcpState.UNBOUND)}: create-tcp-socket")
    for op, moves in TRANSITIONS.items():
        for before, after in moves.items():
            lines.append(f"    {sid(before)} --> {sid(after)}: {op}")
            failed = FAILURE_STATE.get(op)
            if failed is not None and failed is not before:
                lines.append(f"    {sid(before)} --> {sid(failed)}: {op} error")
    return "\n".join(lines) + "\n"


_BOUND_STATES = frozenset(
    {S.BOUND, S.LISTEN_IN_PROGRESS, S.LISTENING, S.CONNECT_IN_PROGRESS, S.CONNECTED}
)
_LISTEN_BACKLOG_STATES = frozenset(
    {S.UNBOUND, S.BIND_IN_PROGRESS, S.BOUND, S.LISTEN_IN_PROGRESS, S.LISTENING}
)


class TcpOptions(msgspec.Struct):
    """Socket options; defaults are what wasmtime reports on Linux."""

    keep_alive_enabled: bool = False
    keep_alive_idle_time: int = 7200 * SECOND
    keep_alive_interval: int = 75 * SECOND
    keep_alive_count: int = 9
    hop_limit: int = 64
    receive_buffer_size: int = 65536
    send_buffer_size: int = 8192


class ConnectAttempt:
    """The outcome of a connect: a `PipeEnd` or an error, maybe known only later."""

    __slots__ = ("_on_cancel", "end", "error", "notifier")

    def __init__(self) -> None:
        self.end: PipeEnd | None = None
        self.error: SocketError | None = None
        self.notifier = Notifier()
        self._on_cancel: Callable[[], None] | None = None

    @classmethod
    def failed(cls, code: ErrorCode, detail: str = "") -> ConnectAttempt:
        attempt = cls()
        attempt.fail(code, detail)
        return attempt

    def done(self) -> bool:
        return self.end is not None or self.error is not None

    def succeed(self, end: PipeEnd) -> None:
        if self.done():
            end.abort()
            return
        self.end = end
        self.notifier.notify()

    def fail(self, code: ErrorCode, detail: str = "") -> None:
        if self.done():
            return
        self.error = SocketError(code, detail)
        self.notifier.notify()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        self._on_cancel = callback

    def cancel(self) -> None:
        """The connecting socket was dropped."""
        if self.end is not None:
            self.end.close()
        elif self.error is None:
            self.error = SocketError(ErrorCode.CONNECTION_ABORTED, "socket dropped")
            callback, self._on_cancel = self._on_cancel, None
            if callback is not None:
                callback()


class _Pending(msgspec.Struct):
    """A connection waiting in a listener's queue."""

    end: PipeEnd
    local: SocketAddress
    remote: SocketAddress
    options: TcpOptions
    # the connecting guest's budget, already charged for the accepted socket
    budget: SocketBudget | None = None
    peer_guest: str = ""
    peer_external: bool = False

    def discard(self) -> None:
        """Reset the queued connection and give back its reserved socket."""
        self.end.abort()
        budget, self.budget = self.budget, None
        if budget is not None:
            budget.give_back()


class Listener:
    """A listening socket's accept queue."""

    __slots__ = (
        "accepted",
        "backlog",
        "closed",
        "local",
        "notifier",
        "options",
        "owner",
        "queue",
        "refused",
    )

    def __init__(self, local: SocketAddress, backlog: int, options: TcpOptions) -> None:
        self.local = local
        self.backlog = backlog
        self.options = options  # the listening socket's, live: accepted sockets inherit them
        self.queue: deque[_Pending] = deque()
        self.notifier = Notifier()
        self.closed = False
        self.accepted = 0
        self.refused = 0
        # Who serves this listener in the host process (a native
        # `streams.VirtualServer`), so the ingress bridge can hand it real
        # connections directly; None for a guest's listener.
        self.owner: object | None = None

    def options_snapshot(self) -> TcpOptions:
        return msgspec.structs.replace(self.options)

    def offer(self, pending: _Pending) -> bool:
        """Queue a new connection; False (refused) if closed or the backlog is full."""
        if self.closed or len(self.queue) >= self.backlog:
            self.refused += 1
            return False
        self.queue.append(pending)
        self.notifier.notify()
        return True

    def close(self) -> None:
        """Reset every connection still waiting to be accepted."""
        self.closed = True
        while self.queue:
            self.queue.popleft().discard()
        self.notifier.notify()

    def __repr__(self) -> str:
        return (
            f"<Listener {self.local} queued={len(self.queue)}/{self.backlog}"
            f" accepted={self.accepted} refused={self.refused}>"
        )


class _Connection:
    """A connected `PipeEnd` shared by a socket and its two streams (ref-counted)."""

    __slots__ = ("end", "on_close", "refs")

    def __init__(self, end: PipeEnd) -> None:
        self.end = end
        self.refs = 1
        self.on_close: Callable[[], None] | None = None

    def acquire(self) -> None:
        self.refs += 1

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self.end.close()
            callback, self.on_close = self.on_close, None
            if callback is not None:
                callback()


class TcpInputStream:
    """The socket's `input-stream`: a child of the socket."""

    __slots__ = ("_conn", "closed")

    def __init__(self, conn: _Connection) -> None:
        conn.refs += 1  # conn.acquire(), without the call
        self._conn = conn
        self.closed = False

    @property
    def end(self) -> PipeEnd:
        return self._conn.end

    def read(self, n: int) -> bytes:
        return self._conn.end.read(n)

    def ready(self) -> bool:
        return self._conn.end.readable()

    def wait_ready(self) -> Coroutine[Any, Any, None]:
        # the pipe end's wait itself, not a coroutine around it
        return self._conn.end.wait_readable()

    def watch(self, fut: asyncio.Future[None]) -> None:
        self._conn.end.watch_readable(fut)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._conn.release()


class TcpOutputStream:
    """The socket's `output-stream`: a child of the socket."""

    __slots__ = ("_conn", "closed")

    def __init__(self, conn: _Connection) -> None:
        conn.refs += 1  # conn.acquire(), without the call
        self._conn = conn
        self.closed = False

    @property
    def end(self) -> PipeEnd:
        return self._conn.end

    def check_write(self) -> int:
        return self._conn.end.check_write()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._conn.end.write(data)

    def write_permitted(self, data: bytes) -> None:
        """`data` was checked against `check_write()` in this same step."""
        self._conn.end.write_permitted(data)

    def flush(self) -> None:
        self._conn.end.flush()

    def ready(self) -> bool:
        return self._conn.end.writable()

    def wait_ready(self) -> Coroutine[Any, Any, None]:
        return self._conn.end.wait_writable()

    def watch(self, fut: asyncio.Future[None]) -> None:
        self._conn.end.watch_writable(fut)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._conn.release()


def _positive(value: int, low: int, high: int) -> int:
    if value <= 0:
        raise SocketError(ErrorCode.INVALID_ARGUMENT, "value must be positive")
    return min(max(value, low), high)


class TcpHost(Protocol):
    """What a TCP socket needs of its guest's network (`GuestNetwork` is one):
    the socket reaches the network through these calls only."""

    def check(self, addr: SocketAddress, use: SocketAddrUse) -> None: ...
    def bind_tcp(
        self, sock: TcpSocket, addr: SocketAddress
    ) -> tuple[PortBinding, SocketAddress]: ...
    def listen_tcp(self, binding: PortBinding, listener: Listener) -> None: ...
    def connect_tcp(
        self, sock: TcpSocket, local: SocketAddress, remote: SocketAddress
    ) -> ConnectAttempt: ...
    def create_tcp_socket(self, family: IpAddressFamily) -> TcpSocket: ...
    def admit(self) -> None: ...
    def accepted_socket(self, family: IpAddressFamily, budget: SocketBudget) -> TcpSocket: ...
    def forget(self, sock: TcpSocket) -> None: ...


class TcpSocket:
    """A WASI `tcp-socket` on a virtual network. Create with `a network's `create_tcp_socket``."""

    def __init__(self, guest: TcpHost, family: IpAddressFamily) -> None:
        self._guest = guest
        self._family = family
        self._state = TcpState.UNBOUND
        self.options = TcpOptions()
        self._backlog = DEFAULT_BACKLOG
        self._binding: PortBinding | None = None
        self._local: SocketAddress | None = None
        self._remote: SocketAddress | None = None
        self._listener: Listener | None = None
        self._attempt: ConnectAttempt | None = None
        self._conn: _Connection | None = None
        self._dropped = False
        # set on accepted sockets: who connected (guest name; from outside the workload?)
        self.peer_guest = ""
        self.peer_external = False

    # -- state layer --------------------------------------------------------

    @property
    def state(self) -> TcpState:
        return self._state

    @property
    def guest(self) -> TcpHost:
        return self._guest

    def _require(self, op: str) -> TcpState:
        nxt = TRANSITIONS[op].get(self._state)
        if nxt is not None:
            return nxt
        if op in _FINISH:
            raise SocketError(ErrorCode.NOT_IN_PROGRESS, f"{op} in state {self._state.value}")
        if op == "start-connect" and self._state is TcpState.CONNECT_IN_PROGRESS:
            raise SocketError(ErrorCode.CONCURRENCY_CONFLICT, "a connect is in progress")
        raise SocketError(ErrorCode.INVALID_STATE, f"{op} in state {self._state.value}")

    def _check_network(self, network: TcpHost) -> None:
        if network is not self._guest:
            raise SocketError(ErrorCode.INVALID_ARGUMENT, "socket belongs to another network")

    def _validate(self, addr: SocketAddress) -> None:
        if not is_valid_unicast_address(addr) or not is_valid_address_family(addr, self._family):
            raise SocketError(ErrorCode.INVALID_ARGUMENT, f"bad address {addr}")

    # -- bind ---------------------------------------------------------------

    def start_bind(self, network: TcpHost, local_address: SocketAddress) -> None:
        self._validate(local_address)
        nxt = self._require("start-bind")
        self._check_network(network)
        network.check(local_address, SocketAddrUse.TCP_BIND)
        self._binding, self._local = network.bind_tcp(self, local_address)
        self._state = nxt

    def finish_bind(self) -> None:
        self._state = self._require("finish-bind")

    # -- connect --------------------------------------------------------------

    def start_connect(self, network: TcpHost, remote_address: SocketAddress) -> None:
        nxt = self._require("start-connect")
        self._validate(remote_address)
        if not is_valid_remote_address(remote_address):
            raise SocketError(ErrorCode.INVALID_ARGUMENT, f"bad remote address {remote_address}")
        self._check_network(network)
        network.check(remote_address, SocketAddrUse.TCP_CONNECT)
        if self._binding is None:
            self._binding, self._local = network.bind_tcp(
                self, SocketAddress.of(IpAddress.unspecified(self._family), 0)
            )
        assert self._local is not None
        if self._local.is_unspecified:
            self._local = self._local.with_ip(_loopback_for(remote_address, self._family))
        self._remote = remote_address
        self._attempt = network.connect_tcp(self, self._local, remote_address)
        self._state = nxt

    def finish_connect(self) -> tuple[TcpInputStream, TcpOutputStream]:
        nxt = self._require("finish-connect")
        attempt = self._attempt
        assert attempt is not None
        if not attempt.done():
            raise SocketError(ErrorCode.WOULD_BLOCK, "connect in progress")
        self._attempt = None
        if attempt.end is None:
            self._fail_to_closed()
            assert attempt.error is not None
            raise attempt.error
        self._state = nxt
        self._conn = _Connection(attempt.end)
        return TcpInputStream(self._conn), TcpOutputStream(self._conn)

    def _fail_to_closed(self) -> None:
        self._state = TcpState.CLOSED
        if self._binding is not None:
            self._binding.release()
            self._binding = None

    # -- listen / accept ------------------------------------------------------

    def start_listen(self) -> None:
        self._state = self._require("start-listen")

    def finish_listen(self) -> None:
        nxt = self._require("finish-listen")
        assert self._binding is not None and self._local is not None
        listener = Listener(self._local, self._backlog, self.options)
        try:
            self._guest.listen_tcp(self._binding, listener)
        except SocketError:
            self._fail_to_closed()
            raise
        self._listener = listener
        self._state = nxt

    @property
    def listener(self) -> Listener | None:
        """The accept queue of a listening socket (None before `finish-listen`)."""
        return self._listener

    def accept(self) -> tuple[TcpSocket, TcpInputStream, TcpOutputStream]:
        self._require("accept")
        listener = self._listener
        assert listener is not None
        if not listener.queue:
            raise SocketError(ErrorCode.WOULD_BLOCK, "no pending connections")
        pending = listener.queue[0]
        if pending.budget is None:
            child = self._guest.create_tcp_socket(self._family)  # new-socket-limit
        else:
            self._guest.admit()
            child = self._guest.accepted_socket(self._family, pending.budget)
            pending.budget = None
        listener.queue.popleft()
        listener.accepted += 1
        child._accepted(pending)
        assert child._conn is not None
        return child, TcpInputStream(child._conn), TcpOutputStream(child._conn)

    def _accepted(self, pending: _Pending) -> None:
        self._state = TcpState.CONNECTED
        self._local = pending.local
        self._remote = pending.remote
        self.peer_guest = pending.peer_guest
        self.peer_external = pending.peer_external
        self.options = pending.options
        self._conn = _Connection(pending.end)

    # -- addresses and flags ------------------------------------------------------

    def local_address(self) -> SocketAddress:
        if self._state not in _BOUND_STATES or self._local is None:
            raise SocketError(ErrorCode.INVALID_STATE, "not bound")
        return self._local

    def remote_address(self) -> SocketAddress:
        if self._state is not TcpState.CONNECTED or self._remote is None:
            raise SocketError(ErrorCode.INVALID_STATE, "not connected")
        return self._remote

    def is_listening(self) -> bool:
        return self._state is TcpState.LISTENING

    def address_family(self) -> IpAddressFamily:
        return self._family

    # -- options ----------------------------------------------------------------------

    def _options(self) -> TcpOptions:
        if self._state is TcpState.CLOSED:
            raise SocketError(ErrorCode.INVALID_STATE, "socket closed")
        return self.options

    def set_listen_backlog_size(self, value: int) -> None:
        if value == 0:
            raise SocketError(ErrorCode.INVALID_ARGUMENT, "backlog must not be 0")
        if self._state not in _LISTEN_BACKLOG_STATES:
            raise SocketError(ErrorCode.INVALID_STATE, f"state {self._state.value}")
        self._backlog = min(max(value, 1), MAX_BACKLOG)
        if self._listener is not None:
            self._listener.backlog = self._backlog

    @property
    def listen_backlog_size(self) -> int:
        return self._backlog

    def keep_alive_enabled(self) -> bool:
        return self._options().keep_alive_enabled

    def set_keep_alive_enabled(self, value: bool) -> None:
        self._options().keep_alive_enabled = bool(value)

    def keep_alive_idle_time(self) -> int:
        return self._options().keep_alive_idle_time

    def set_keep_alive_idle_time(self, value: int) -> None:
        opts = self._options()
        opts.keep_alive_idle_time = _positive(value, SECOND, 32767 * SECOND)

    def keep_alive_interval(self) -> int:
        return self._options().keep_alive_interval

    def set_keep_alive_interval(self, value: int) -> None:
        opts = self._options()
        opts.keep_alive_interval = _positive(value, SECOND, 32767 * SECOND)

    def keep_alive_count(self) -> int:
        return self._options().keep_alive_count

    def set_keep_alive_count(self, value: int) -> None:
        opts = self._options()
        opts.keep_alive_count = _positive(value, 1, 127)

    def hop_limit(self) -> int:
        return self._options().hop_limit

    def set_hop_limit(self, value: int) -> None:
        opts = self._options()
        opts.hop_limit = _positive(value, 1, 255)

    def receive_buffer_size(self) -> int:
        return self._options().receive_buffer_size

    def set_receive_buffer_size(self, value: int) -> None:
        opts = self._options()
        opts.receive_buffer_size = _positive(value, 1, _I32_MAX)

    def send_buffer_size(self) -> int:
        return self._options().send_buffer_size

    def set_send_buffer_size(self, value: int) -> None:
        opts = self._options()
        opts.send_buffer_size = _positive(value, 1, _I32_MAX)

    # -- shutdown, readiness, drop ------------------------------------------------------

    def shutdown(self, how: ShutdownType) -> None:
        self._require("shutdown")
        assert self._conn is not None
        end = self._conn.end
        if how is not ShutdownType.SEND:
            end.shutdown_receive()
        if how is not ShutdownType.RECEIVE:
            end.shutdown_send()

    def ready(self) -> bool:
        if self._state is TcpState.CONNECT_IN_PROGRESS:
            return self._attempt is None or self._attempt.done()
        if self._state is TcpState.LISTENING:
            return self._listener is None or bool(self._listener.queue)
        return True

    async def wait_ready(self) -> None:
        if self._state is TcpState.CONNECT_IN_PROGRESS and self._attempt is not None:
            await wait_until(self.ready, self._attempt.notifier)
        elif self._state is TcpState.LISTENING and self._listener is not None:
            await wait_until(self.ready, self._listener.notifier)

    def watch(self, fut: asyncio.Future[None]) -> None:
        """Resolve `fut` at the next change `ready()` may see."""
        if self._state is TcpState.CONNECT_IN_PROGRESS and self._attempt is not None:
            self._attempt.notifier.watch(fut)
        elif self._state is TcpState.LISTENING and self._listener is not None:
            self._listener.notifier.watch(fut)
        elif not fut.done():
            fut.set_result(None)

    @property
    def connection(self) -> PipeEnd | None:
        """The pipe end of a connected socket."""
        return None if self._conn is None else self._conn.end

    @property
    def closed(self) -> bool:
        return self._dropped

    def close(self) -> None:
        """Drop the socket (streams keep the connection open until they are dropped)."""
        if self._dropped:
            return
        self._dropped = True
        self._state = TcpState.CLOSED
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._attempt is not None:
            self._attempt.cancel()
            self._attempt = None
        binding, self._binding = self._binding, None
        if self._conn is not None and self._conn.refs > 1 and binding is not None:
            self._conn.on_close = binding.release  # the port is held while the streams live
            binding = None
        if self._conn is not None:
            self._conn.release()
        if binding is not None:
            binding.release()
        self._guest.forget(self)

    def abort(self) -> None:
        """Drop the socket and its connection at once, whatever streams are left."""
        conn = self._conn
        self.close()
        if conn is not None and conn.refs > 0:
            conn.end.close()
            conn.refs = 0
            callback, conn.on_close = conn.on_close, None
            if callback is not None:
                callback()

    def __repr__(self) -> str:
        parts = [f"<TcpSocket {self._family.value} {self._state.value}"]
        if self._local is not None:
            parts.append(f"local={self._local}")
        if self._remote is not None:
            parts.append(f"remote={self._remote}")
        if self._listener is not None:
            parts.append(f"queued={len(self._listener.queue)}/{self._listener.backlog}")
        if self._dropped:
            parts.append("dropped")
        return " ".join(parts) + ">"


def _loopback_for(remote: SocketAddress, family: IpAddressFamily) -> IpAddress:
    """The source address a kernel picks to reach `remote` from an unbound socket."""
    return IpAddress.loopback(family)
