"""Errors of the virtual network.

Three kinds, kept apart as in wasmtime's `TrappableError`:

- `SocketError(code)`: a WIT `wasi:sockets/network.error-code` that the guest
  receives as a value (`result::err`). Every sans-IO socket method either
  returns its value or raises one of these.
- `StreamClosed`: the `wasi:io/streams.stream-error::closed` case (EOF on an
  input stream, a shut-down output stream).
- `NetTrap`: the guest broke an API contract (wrote more than `check-write`
  permitted, sent datagrams without `check-send`, ...). The WIT says these
  trap; the binding turns the exception into a trap.

A connection reset seen on a stream is raised as
`SocketError(ErrorCode.CONNECTION_RESET)`; the streams binding wraps it as
`stream-error::last-operation-failed(error)` whose
`network-error-code(error)` is `connection-reset`, which is what wasmtime
gives a guest for a kernel ECONNRESET.

The translation between operating-system errors and error codes, both ways,
lives in this module only: `error_code_from_oserror` for real sockets
(egress, ingress) and `oserror_from_error_code` for the asyncio-shaped
native API.
"""

from __future__ import annotations

import enum
import errno
import socket

from fabric.errors import FabricError

__all__ = [
    "ErrorCode",
    "NetError",
    "NetTrap",
    "SocketError",
    "StreamClosed",
    "error_code_from_oserror",
    "oserror_from_error_code",
]


class ErrorCode(enum.Enum):
    """`wasi:sockets/network.error-code`, values are the WIT case names."""

    UNKNOWN = "unknown"
    ACCESS_DENIED = "access-denied"
    NOT_SUPPORTED = "not-supported"
    INVALID_ARGUMENT = "invalid-argument"
    OUT_OF_MEMORY = "out-of-memory"
    TIMEOUT = "timeout"
    CONCURRENCY_CONFLICT = "concurrency-conflict"
    NOT_IN_PROGRESS = "not-in-progress"
    WOULD_BLOCK = "would-block"
    INVALID_STATE = "invalid-state"
    NEW_SOCKET_LIMIT = "new-socket-limit"
    ADDRESS_NOT_BINDABLE = "address-not-bindable"
    ADDRESS_IN_USE = "address-in-use"
    REMOTE_UNREACHABLE = "remote-unreachable"
    CONNECTION_REFUSED = "connection-refused"
    CONNECTION_RESET = "connection-reset"
    CONNECTION_ABORTED = "connection-aborted"
    DATAGRAM_TOO_LARGE = "datagram-too-large"
    NAME_UNRESOLVABLE = "name-unresolvable"
    TEMPORARY_RESOLVER_FAILURE = "temporary-resolver-failure"
    PERMANENT_RESOLVER_FAILURE = "permanent-resolver-failure"


class NetError(FabricError):
    """Base class of every exception raised by `fabric.net`."""


class SocketError(NetError):
    """A guest-visible `error-code`."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code.value}: {detail}" if detail else code.value)

    def __repr__(self) -> str:
        return f"SocketError({self.code.value!r}, {self.detail!r})"


class StreamClosed(NetError):
    """`stream-error::closed`: end of stream, or writing to a closed stream."""


class NetTrap(NetError):
    """The caller violated an API contract; the WASI binding turns this into a trap."""


# errno -> error-code, the table of wasmtime's `From<&Errno> for ErrorCode`.
_ERRNO_TO_CODE: dict[int, ErrorCode] = {
    errno.EPERM: ErrorCode.ACCESS_DENIED,
    errno.EACCES: ErrorCode.ACCESS_DENIED,
    errno.EADDRINUSE: ErrorCode.ADDRESS_IN_USE,
    errno.EADDRNOTAVAIL: ErrorCode.ADDRESS_NOT_BINDABLE,
    errno.ETIMEDOUT: ErrorCode.TIMEOUT,
    errno.ECONNREFUSED: ErrorCode.CONNECTION_REFUSED,
    errno.ECONNRESET: ErrorCode.CONNECTION_RESET,
    errno.EPIPE: ErrorCode.CONNECTION_RESET,
    errno.ECONNABORTED: ErrorCode.CONNECTION_ABORTED,
    errno.EINVAL: ErrorCode.INVALID_ARGUMENT,
    errno.EHOSTUNREACH: ErrorCode.REMOTE_UNREACHABLE,
    errno.EHOSTDOWN: ErrorCode.REMOTE_UNREACHABLE,
    errno.ENETDOWN: ErrorCode.REMOTE_UNREACHABLE,
    errno.ENETUNREACH: ErrorCode.REMOTE_UNREACHABLE,
    errno.ENONET: ErrorCode.REMOTE_UNREACHABLE,
    errno.EISCONN: ErrorCode.INVALID_STATE,
    errno.ENOTCONN: ErrorCode.INVALID_STATE,
    errno.EDESTADDRREQ: ErrorCode.INVALID_STATE,
    errno.EMSGSIZE: ErrorCode.DATAGRAM_TOO_LARGE,
    errno.ENOMEM: ErrorCode.OUT_OF_MEMORY,
    errno.ENOBUFS: ErrorCode.OUT_OF_MEMORY,
    errno.EOPNOTSUPP: ErrorCode.NOT_SUPPORTED,
    errno.ENOPROTOOPT: ErrorCode.NOT_SUPPORTED,
    errno.EPFNOSUPPORT: ErrorCode.NOT_SUPPORTED,
    errno.EPROTONOSUPPORT: ErrorCode.NOT_SUPPORTED,
    errno.EPROTOTYPE: ErrorCode.NOT_SUPPORTED,
    errno.ESOCKTNOSUPPORT: ErrorCode.NOT_SUPPORTED,
    errno.EAFNOSUPPORT: ErrorCode.NOT_SUPPORTED,
    errno.EMFILE: ErrorCode.NEW_SOCKET_LIMIT,
    errno.ENFILE: ErrorCode.NEW_SOCKET_LIMIT,
    errno.EAGAIN: ErrorCode.WOULD_BLOCK,
}

# getaddrinfo failures (socket.gaierror.errno is an EAI_* value).
_EAI_TO_CODE: dict[int, ErrorCode] = {
    socket.EAI_NONAME: ErrorCode.NAME_UNRESOLVABLE,
    socket.EAI_AGAIN: ErrorCode.TEMPORARY_RESOLVER_FAILURE,
    socket.EAI_FAIL: ErrorCode.PERMANENT_RESOLVER_FAILURE,
    socket.EAI_MEMORY: ErrorCode.OUT_OF_MEMORY,
}
for _name in ("EAI_NODATA", "EAI_ADDRFAMILY"):
    if hasattr(socket, _name):
        _EAI_TO_CODE[getattr(socket, _name)] = ErrorCode.NAME_UNRESOLVABLE

# error-code -> OSError subclass and errno, for the native asyncio-shaped API.
_CODE_TO_OSERROR: dict[ErrorCode, tuple[type[OSError], int]] = {
    ErrorCode.ACCESS_DENIED: (PermissionError, errno.EACCES),
    ErrorCode.NOT_SUPPORTED: (OSError, errno.EOPNOTSUPP),
    ErrorCode.INVALID_ARGUMENT: (OSError, errno.EINVAL),
    ErrorCode.OUT_OF_MEMORY: (OSError, errno.ENOMEM),
    ErrorCode.TIMEOUT: (TimeoutError, errno.ETIMEDOUT),
    ErrorCode.CONCURRENCY_CONFLICT: (OSError, errno.EALREADY),
    ErrorCode.NOT_IN_PROGRESS: (OSError, errno.EINVAL),
    ErrorCode.WOULD_BLOCK: (BlockingIOError, errno.EWOULDBLOCK),
    ErrorCode.INVALID_STATE: (OSError, errno.EINVAL),
    ErrorCode.NEW_SOCKET_LIMIT: (OSError, errno.EMFILE),
    ErrorCode.ADDRESS_NOT_BINDABLE: (OSError, errno.EADDRNOTAVAIL),
    ErrorCode.ADDRESS_IN_USE: (OSError, errno.EADDRINUSE),
    ErrorCode.REMOTE_UNREACHABLE: (OSError, errno.EHOSTUNREACH),
    ErrorCode.CONNECTION_REFUSED: (ConnectionRefusedError, errno.ECONNREFUSED),
    ErrorCode.CONNECTION_RESET: (ConnectionResetError, errno.ECONNRESET),
    ErrorCode.CONNECTION_ABORTED: (ConnectionAbortedError, errno.ECONNABORTED),
    ErrorCode.DATAGRAM_TOO_LARGE: (OSError, errno.EMSGSIZE),
}


def error_code_from_oserror(exc: BaseException) -> ErrorCode:
    """Map an exception raised by a real socket operation to an `ErrorCode`.

    The one place where operating-system errors become guest error codes.
    """
    if isinstance(exc, socket.gaierror):
        return _EAI_TO_CODE.get(exc.errno or 0, ErrorCode.NAME_UNRESOLVABLE)
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return ErrorCode.TIMEOUT  # asyncio.wait_for / asyncio.timeout
    if isinstance(exc, OSError):
        if exc.errno is not None and exc.errno in _ERRNO_TO_CODE:
            return _ERRNO_TO_CODE[exc.errno]
        # Same fallbacks as wasmtime's io::ErrorKind mapping.
        for kind, code in (
            (ConnectionRefusedError, ErrorCode.CONNECTION_REFUSED),
            (ConnectionResetError, ErrorCode.CONNECTION_RESET),
            (ConnectionAbortedError, ErrorCode.CONNECTION_ABORTED),
            (BrokenPipeError, ErrorCode.CONNECTION_RESET),
            (PermissionError, ErrorCode.ACCESS_DENIED),
            (TimeoutError, ErrorCode.TIMEOUT),
        ):
            if isinstance(exc, kind):
                return code
    if isinstance(exc, MemoryError):
        return ErrorCode.OUT_OF_MEMORY
    return ErrorCode.UNKNOWN


def oserror_from_error_code(code: ErrorCode, detail: str = "") -> OSError:
    """The `OSError` that asyncio would raise for the same failure."""
    cls, number = _CODE_TO_OSERROR.get(code, (OSError, errno.EIO))
    return cls(number, f"{code.value}: {detail}" if detail else code.value)
