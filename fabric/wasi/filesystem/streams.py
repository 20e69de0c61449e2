"""Shared OS file descriptors, and the file streams made from descriptors.

A descriptor and every stream obtained from it (``read-via-stream``,
``write-via-stream``, ``append-via-stream``) share one OS file descriptor
through a reference-counted :class:`FdHandle`, as wasmtime shares an
``Arc<File>``: the guest may drop the descriptor before its streams.

File I/O is synchronous and always ready: a read returns what ``pread``
gives (at most :data:`MAX_READ` bytes), a write goes to the kernel at once.
A failed operation surfaces once as ``last-operation-failed`` carrying a
``wasi:io/error`` whose ``code`` is the filesystem error code
(``filesystem-error-code`` reads it back); the stream is closed after that,
as in wasmtime.
"""

from __future__ import annotations

import errno
import fcntl
import os

import msgspec

from ..io import InputStream, OutputStream, StreamClosed, StreamFailed
from .errors import error_code

#: Largest read per call (wasmtime's ``MAX_READ_SIZE_ALLOC``).
MAX_READ = 64 * 1024
#: What ``check-write`` permits on a file stream (wasmtime's ``FILE_WRITE_CAPACITY``).
WRITE_CAPACITY = 1024 * 1024
#: The largest file offset the kernel takes (``off_t``).
MAX_OFFSET = 2**63 - 1


class FilesystemStatistics(msgspec.Struct, frozen=True):
    """Counts of OS file descriptors held for guests, process-wide."""

    open_fds: int
    opened: int
    closed: int


class _Counters:
    opened = 0
    closed = 0


def statistics() -> FilesystemStatistics:
    """How many file descriptors guests hold now, and how many were opened and closed."""
    return FilesystemStatistics(
        open_fds=_Counters.opened - _Counters.closed,
        opened=_Counters.opened,
        closed=_Counters.closed,
    )


class FdHandle:
    """An OS file descriptor with a reference count; closed when the last user releases it."""

    __slots__ = ("_fd", "_refs")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._refs = 1
        _Counters.opened += 1

    @property
    def fd(self) -> int:
        if self._refs <= 0:
            raise ValueError("file descriptor handle already closed")
        return self._fd

    def acquire(self) -> FdHandle:
        if self._refs <= 0:
            raise ValueError("file descriptor handle already closed")
        self._refs += 1
        return self

    def release(self) -> None:
        if self._refs <= 0:
            return
        self._refs -= 1
        if self._refs == 0:
            _Counters.closed += 1
            os.close(self._fd)

    def __repr__(self) -> str:
        return f"<FdHandle fd={self._fd} refs={self._refs}>"


def _failed(exc: OSError) -> StreamFailed:
    return StreamFailed(f"{exc.strerror or exc} (errno {exc.errno})", error_code(exc))


class FileInput(InputStream):
    """``read-via-stream``: reads from ``offset`` on, advancing."""

    def __init__(self, handle: FdHandle, offset: int) -> None:
        self._handle: FdHandle | None = handle.acquire()
        self.position = offset

    def _read(self, n: int) -> bytes:
        handle = self._handle
        if handle is None:
            raise StreamClosed()
        if n == 0:
            return b""
        try:
            if self.position > MAX_OFFSET:
                raise OSError(errno.EINVAL, "file offset too large")
            data = os.pread(handle.fd, min(n, MAX_READ), self.position)
        except OSError as e:
            self.close()
            raise _failed(e) from None
        if not data:
            raise StreamClosed()
        self.position += len(data)
        return data

    def _readable(self) -> bool:
        return True

    async def _wait_readable(self) -> None:
        return None

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.release()

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"fd={self._handle._fd}"
        return f"<FileInput {state} position={self.position}>"


class FileOutput(OutputStream):
    """``write-via-stream`` (from ``offset`` on) or ``append-via-stream`` (``offset`` None)."""

    def __init__(self, handle: FdHandle, offset: int | None) -> None:
        self._handle: FdHandle | None = handle.acquire()
        self.position = offset

    def _check_write(self) -> int:
        if self._handle is None:
            raise StreamClosed()
        return WRITE_CAPACITY

    def _write(self, data: bytes) -> None:
        handle = self._handle
        if handle is None:
            raise StreamClosed()
        try:
            fd = handle.fd
            view = memoryview(data)
            while view:
                if self.position is None:
                    written = _append(fd, view)
                else:
                    if self.position > MAX_OFFSET:
                        raise OSError(errno.EINVAL, "file offset too large")
                    written = os.pwrite(fd, view, self.position)
                    self.position += written
                if written <= 0:
                    raise OSError(errno.EIO, "the file accepted no bytes")
                view = view[written:]
        except OSError as e:
            self.close()
            raise _failed(e) from None

    def _writable(self) -> bool:
        return True

    async def _wait_writable(self) -> None:
        return None

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.release()

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"fd={self._handle._fd}"
        where = "append" if self.position is None else f"position={self.position}"
        return f"<FileOutput {state} {where}>"


def _append(fd: int, data: memoryview) -> int:
    """Write at the end of the file, whatever the descriptor's offset (``RWF_APPEND``)."""
    try:
        return os.pwritev(fd, [data], 0, os.RWF_APPEND)
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    # Kernels before 4.16: switch the description to O_APPEND for one write.
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_APPEND)
    try:
        return os.write(fd, data)
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
