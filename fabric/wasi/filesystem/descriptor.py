"""``wasi:filesystem/types``: descriptors and directory entry streams.

A :class:`Descriptor` is a file or a directory open on the host, plus the
permissions of the preopen it came from: every descriptor opened under a
read-only preopen is read-only, and its mutating calls fail with
``not-permitted`` before the kernel is asked (wasmtime's ``FsPerms``).
Paths are resolved by :mod:`.paths`, which keeps them inside the directory
they start from.  Where the WIT leaves room, wasmtime's choices are followed:
file-only calls on a directory give ``bad-descriptor`` (``read-via-stream``
gives ``is-directory``), directory calls on a file ``not-directory``; the
``*-sync`` open flags are ``unsupported``; ``link-at`` refuses
``symlink-follow`` (``invalid``) and both ``link-at`` and ``rename-at`` refuse
a read-only side; ``read`` returns at most 64 KiB and reports the end of the
file only with an empty read.  Timestamps before 1970 read as absent.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from typing import Any

from fabric.engine import HostResource

from .errors import ESCAPE, READ_ONLY, error_code, fs_error, maps_os_errors
from .paths import check_path, resolve
from .streams import MAX_OFFSET, MAX_READ, FdHandle, FileInput, FileOutput

Datetime = dict[str, int]
Stat = dict[str, Any]
Entry = dict[str, str]
NewTimestamp = tuple[str, Any]

_NS = 1_000_000_000

_TYPES = {
    stat.S_IFBLK: "block-device",
    stat.S_IFCHR: "character-device",
    stat.S_IFDIR: "directory",
    stat.S_IFIFO: "fifo",
    stat.S_IFLNK: "symbolic-link",
    stat.S_IFREG: "regular-file",
    stat.S_IFSOCK: "socket",
}

_ADVICE = {
    "normal": os.POSIX_FADV_NORMAL,
    "sequential": os.POSIX_FADV_SEQUENTIAL,
    "random": os.POSIX_FADV_RANDOM,
    "will-need": os.POSIX_FADV_WILLNEED,
    "dont-need": os.POSIX_FADV_DONTNEED,
    "no-reuse": os.POSIX_FADV_NOREUSE,
}

_SYNC_FLAGS = frozenset({"file-integrity-sync", "data-integrity-sync", "requested-write-sync"})
# O_NOFOLLOW: the final name was already resolved (or must not be followed).
# O_NONBLOCK: opening a FIFO must not block the event loop.
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def descriptor_type(mode: int) -> str:
    return _TYPES.get(stat.S_IFMT(mode), "unknown")


def _datetime(ns: int) -> Datetime | None:
    if ns < 0:
        return None
    seconds, nanoseconds = divmod(ns, _NS)
    return {"seconds": seconds, "nanoseconds": nanoseconds}


def descriptor_stat(st: os.stat_result) -> Stat:
    """``descriptor-stat`` of a ``stat`` result."""
    return {
        "type": descriptor_type(st.st_mode),
        "link-count": st.st_nlink,
        "size": st.st_size,
        "data-access-timestamp": _datetime(st.st_atime_ns),
        "data-modification-timestamp": _datetime(st.st_mtime_ns),
        "status-change-timestamp": _datetime(st.st_ctime_ns),
    }


def metadata_hash(st: os.stat_result) -> dict[str, int]:
    """A 128-bit digest of the file's identity (device and inode), stable per host."""
    digest = hashlib.blake2b(
        st.st_dev.to_bytes(8, "little") + st.st_ino.to_bytes(8, "little"), digest_size=16
    ).digest()
    return {
        "lower": int.from_bytes(digest[:8], "little"),
        "upper": int.from_bytes(digest[8:], "little"),
    }


def _offset(value: int) -> int:
    """A file offset or size the kernel takes (``off_t``); larger ones are ``invalid``."""
    if value > MAX_OFFSET:
        raise fs_error("invalid")
    return value


def _new_time(ts: NewTimestamp) -> int | None:
    case, payload = ts
    if case == "no-change":
        return None
    if case == "now":
        return time.time_ns()
    ns: int = payload["seconds"] * _NS + payload["nanoseconds"]
    if ns > MAX_OFFSET:
        raise fs_error("overflow")
    return ns


def _set_times(
    atime: NewTimestamp,
    mtime: NewTimestamp,
    current: Callable[[], os.stat_result],
    apply: Callable[[tuple[int, int]], None],
) -> None:
    """``utimensat`` with per-field no-change (``os.utime`` has no ``UTIME_OMIT``)."""
    a, m = _new_time(atime), _new_time(mtime)
    if a is None and m is None:
        return
    if a is None or m is None:
        st = current()
        a = st.st_atime_ns if a is None else a
        m = st.st_mtime_ns if m is None else m
    apply((a, m))


def _utf8(text: str) -> str:
    """A host name as a WIT string; names that are not UTF-8 cannot cross."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise fs_error("illegal-byte-sequence") from None
    return text


def _entry_type(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "symbolic-link"
    if entry.is_dir(follow_symlinks=False):
        return "directory"
    if entry.is_file(follow_symlinks=False):
        return "regular-file"
    return descriptor_type(entry.stat(follow_symlinks=False).st_mode)


def _list_directory(fd: int) -> list[Entry | str]:
    """Every entry (or the error code it gives) of a directory, read at once as wasmtime does."""
    entries: list[Entry | str] = []
    with os.scandir(fd) as it:
        for entry in it:
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                entries.append("illegal-byte-sequence")
                continue
            try:
                entries.append({"type": _entry_type(entry), "name": entry.name})
            except OSError as e:
                entries.append(error_code(e))
    return entries


class DirectoryEntryStream(HostResource):
    """``directory-entry-stream``: the entries of a directory, without ``.`` and ``..``."""

    def __init__(self, entries: list[Entry | str]) -> None:
        self._entries = entries
        self._next = 0

    def read_directory_entry(self) -> Entry | None:
        if self._next >= len(self._entries):
            return None
        entry = self._entries[self._next]
        self._next += 1
        if isinstance(entry, str):
            raise fs_error(entry)
        return entry

    def __repr__(self) -> str:
        return f"<DirectoryEntryStream {self._next}/{len(self._entries)}>"


class Descriptor(HostResource):
    """``descriptor``: an open file or directory, and what the guest may do with it."""

    def __init__(
        self,
        handle: FdHandle,
        *,
        is_dir: bool,
        readonly: bool,
        readable: bool = True,
        writable: bool = False,
        mutate: bool = False,
    ) -> None:
        self._handle = handle
        self.is_dir = is_dir
        #: opened under a read-only preopen: every mutation is refused
        self.readonly = readonly
        self.readable = readable
        self.writable = writable
        self.mutate = mutate
        self.closed = False

    @classmethod
    def open_directory(cls, host_path: str, *, readonly: bool) -> Descriptor:
        """A preopen: the host directory ``host_path`` as a root descriptor."""
        handle = FdHandle(os.open(host_path, _DIR_FLAGS))
        return cls(
            handle, is_dir=True, readonly=readonly, writable=not readonly, mutate=not readonly
        )

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._handle.release()

    def __repr__(self) -> str:
        kind = "dir" if self.is_dir else "file"
        state = "closed" if self.closed else f"fd={self._handle._fd}"
        mode = ("r" if self.readable else "") + ("w" if self.writable else "")
        return (
            f"<Descriptor {kind} {state} mode={mode or '-'}{' readonly' if self.readonly else ''}>"
        )

    # -- helpers ------------------------------------------------------------
    @property
    def fd(self) -> int:
        return self._handle.fd

    def _file(self) -> int:
        if self.is_dir:
            raise fs_error("bad-descriptor")
        return self._handle.fd

    def _dir(self) -> int:
        if not self.is_dir:
            raise fs_error("not-directory")
        return self._handle.fd

    def _check_mutable(self) -> None:
        if self.readonly:
            raise fs_error(READ_ONLY)

    # -- streams ------------------------------------------------------------
    def read_via_stream(self, offset: int) -> FileInput:
        if self.is_dir:
            raise fs_error("is-directory")
        return FileInput(self._handle, offset)

    def write_via_stream(self, offset: int) -> FileOutput:
        self._file()
        self._check_mutable()
        return FileOutput(self._handle, offset)

    def append_via_stream(self) -> FileOutput:
        self._file()
        self._check_mutable()
        return FileOutput(self._handle, None)

    # -- the descriptor itself --------------------------------------------------
    @maps_os_errors
    def advise(self, offset: int, length: int, advice: str) -> None:
        os.posix_fadvise(self._file(), _offset(offset), _offset(length), _ADVICE[advice])

    @maps_os_errors
    def sync_data(self) -> None:
        os.fdatasync(self.fd)

    @maps_os_errors
    def sync(self) -> None:
        os.fsync(self.fd)

    def get_flags(self) -> frozenset[str]:
        flags = {"read"} if self.readable else set()
        if self.is_dir:
            if self.mutate:
                flags.add("mutate-directory")
        elif self.writable:
            flags.add("write")
        return frozenset(flags)

    @maps_os_errors
    def get_type(self) -> str:
        if self.is_dir:
            return "directory"
        return descriptor_type(os.fstat(self.fd).st_mode)

    @maps_os_errors
    def set_size(self, size: int) -> None:
        fd = self._file()
        self._check_mutable()
        os.ftruncate(fd, _offset(size))

    @maps_os_errors
    def set_times(self, atime: NewTimestamp, mtime: NewTimestamp) -> None:
        self._check_mutable()
        fd = self.fd
        _set_times(atime, mtime, lambda: os.fstat(fd), lambda ns: os.utime(fd, ns=ns))

    @maps_os_errors
    def read(self, length: int, offset: int) -> tuple[bytes, bool]:
        data = os.pread(self._file(), min(length, MAX_READ), _offset(offset))
        return data, not data

    @maps_os_errors
    def write(self, buffer: bytes, offset: int) -> int:
        fd = self._file()
        self._check_mutable()
        return os.pwrite(fd, buffer, _offset(offset))

    @maps_os_errors
    def read_directory(self) -> DirectoryEntryStream:
        return DirectoryEntryStream(_list_directory(self._dir()))

    @maps_os_errors
    def stat(self) -> Stat:
        return descriptor_stat(os.fstat(self.fd))

    def is_same_object(self, other: Descriptor) -> bool:
        a, b = os.fstat(self.fd), os.fstat(other.fd)
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    @maps_os_errors
    def metadata_hash(self) -> dict[str, int]:
        return metadata_hash(os.fstat(self.fd))

    # -- paths under a directory ----------------------------------------------
    @maps_os_errors
    def open_at(
        self,
        path_flags: frozenset[str],
        path: str,
        open_flags: frozenset[str],
        flags: frozenset[str],
    ) -> Descriptor:
        base = self._dir()
        create = "create" in open_flags
        truncate = "truncate" in open_flags
        directory = "directory" in open_flags
        writable = create or truncate or "write" in flags
        readable = "read" in flags or "write" not in flags
        if flags & _SYNC_FLAGS:
            raise fs_error("unsupported")
        if directory and (create or truncate or "exclusive" in open_flags):
            raise fs_error("invalid")
        if self.readonly and writable:
            raise fs_error(READ_ONLY)
        oflags = _OPEN_FLAGS | (
            os.O_RDWR if readable and writable else os.O_WRONLY if writable else os.O_RDONLY
        )
        if create:
            oflags |= os.O_CREAT | (os.O_EXCL if "exclusive" in open_flags else 0)
        if truncate:
            oflags |= os.O_TRUNC
        if directory:
            oflags |= os.O_DIRECTORY
        with resolve(base, path, follow="symlink-follow" in path_flags) as r:
            fd = os.open(r.name, oflags, 0o666, dir_fd=r.dir_fd)
        handle = FdHandle(fd)
        try:
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        except BaseException:
            handle.release()
            raise
        return Descriptor(
            handle,
            is_dir=is_dir,
            readonly=self.readonly,
            readable=readable,
            writable=writable,
            mutate=is_dir and not self.readonly and "mutate-directory" in flags,
        )

    @maps_os_errors
    def stat_at(self, path_flags: frozenset[str], path: str) -> Stat:
        with resolve(self._dir(), path, follow="symlink-follow" in path_flags) as r:
            return descriptor_stat(os.stat(r.name, dir_fd=r.dir_fd, follow_symlinks=False))

    @maps_os_errors
    def metadata_hash_at(self, path_flags: frozenset[str], path: str) -> dict[str, int]:
        with resolve(self._dir(), path, follow="symlink-follow" in path_flags) as r:
            return metadata_hash(os.stat(r.name, dir_fd=r.dir_fd, follow_symlinks=False))

    @maps_os_errors
    def set_times_at(
        self, path_flags: frozenset[str], path: str, atime: NewTimestamp, mtime: NewTimestamp
    ) -> None:
        base = self._dir()
        self._check_mutable()
        with resolve(base, path, follow="symlink-follow" in path_flags) as r:
            name, fd = r.name, r.dir_fd
            _set_times(
                atime,
                mtime,
                lambda: os.stat(name, dir_fd=fd, follow_symlinks=False),
                lambda ns: os.utime(name, ns=ns, dir_fd=fd, follow_symlinks=False),
            )

    @maps_os_errors
    def create_directory_at(self, path: str) -> None:
        base = self._dir()
        self._check_mutable()
        with resolve(base, path, follow=False) as r:
            os.mkdir(r.name, 0o777, dir_fd=r.dir_fd)

    @maps_os_errors
    def remove_directory_at(self, path: str) -> None:
        base = self._dir()
        self._check_mutable()
        with resolve(base, path, follow=False) as r:
            # cap-std removes "dir/" as "dir/." (invalid): keep wasmtime's answer.
            name = r.name + "." if r.name.endswith("/") else r.name
            os.rmdir(name, dir_fd=r.dir_fd)

    @maps_os_errors
    def unlink_file_at(self, path: str) -> None:
        base = self._dir()
        self._check_mutable()
        with resolve(base, path, follow=False) as r:
            os.unlink(r.name, dir_fd=r.dir_fd)

    @maps_os_errors
    def readlink_at(self, path: str) -> str:
        with resolve(self._dir(), path, follow=False) as r:
            target = os.readlink(r.name, dir_fd=r.dir_fd)
        if target.startswith("/"):
            # cap-std hides absolute targets: they would reveal the host's layout.
            raise fs_error(ESCAPE)
        return _utf8(target)

    @maps_os_errors
    def symlink_at(self, old_path: str, new_path: str) -> None:
        base = self._dir()
        self._check_mutable()
        check_path(old_path)
        if old_path.startswith("/"):
            raise fs_error(ESCAPE)
        with resolve(base, new_path, follow=False) as r:
            os.symlink(old_path, r.name, dir_fd=r.dir_fd)

    @maps_os_errors
    def link_at(
        self, old_path_flags: frozenset[str], old_path: str, new: Descriptor, new_path: str
    ) -> None:
        src, dst = self._dir(), new._dir()
        self._check_mutable()
        new._check_mutable()
        if "symlink-follow" in old_path_flags:
            raise fs_error("invalid")
        with resolve(src, old_path, follow=False) as a, resolve(dst, new_path, follow=False) as b:
            os.link(a.name, b.name, src_dir_fd=a.dir_fd, dst_dir_fd=b.dir_fd, follow_symlinks=False)

    @maps_os_errors
    def rename_at(self, old_path: str, new: Descriptor, new_path: str) -> None:
        src, dst = self._dir(), new._dir()
        self._check_mutable()
        new._check_mutable()
        with resolve(src, old_path, follow=False) as a, resolve(dst, new_path, follow=False) as b:
            os.rename(a.name, b.name, src_dir_fd=a.dir_fd, dst_dir_fd=b.dir_fd)
