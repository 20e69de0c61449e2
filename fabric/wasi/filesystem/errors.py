"""``wasi:filesystem`` error codes, and the one mapping from OS errors to them.

Every ``OSError`` a filesystem call raises becomes a WIT ``error-code`` here
(:func:`error_code`), in this module only: host methods are wrapped with
:func:`maps_os_errors`, file streams call :func:`error_code` for the
``wasi:io/error`` they hand out.  Refusals decided by fabric itself (a path
leaving its preopen, a write under a read-only preopen) use the codes
wasmtime uses for them, named below.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from fabric.engine import Err

#: Every case of ``wasi:filesystem/types.error-code``.
ERROR_CODES: frozenset[str] = frozenset(
    {
        "access",
        "would-block",
        "already",
        "bad-descriptor",
        "busy",
        "deadlock",
        "quota",
        "exist",
        "file-too-large",
        "illegal-byte-sequence",
        "in-progress",
        "interrupted",
        "invalid",
        "io",
        "is-directory",
        "loop",
        "too-many-links",
        "message-size",
        "name-too-long",
        "no-device",
        "no-entry",
        "no-lock",
        "insufficient-memory",
        "insufficient-space",
        "not-directory",
        "not-empty",
        "not-recoverable",
        "unsupported",
        "no-tty",
        "no-such-device",
        "overflow",
        "not-permitted",
        "pipe",
        "read-only",
        "invalid-seek",
        "text-file-busy",
        "cross-device",
    }
)

#: A path that leaves the directory it is resolved in (``..`` above the
#: root, an absolute path, a symlink pointing outside): cap-std's "escape
#: attempt", which wasmtime reports as ``not-permitted``.
ESCAPE = "not-permitted"
#: A mutation under a read-only preopen (wasmtime's ``FsPerms::ReadOnly``).
READ_ONLY = "not-permitted"

# POSIX errno -> error-code, as the WIT documents each case ("similar to
# EACCES in POSIX", ...). Unknown errnos become ``io``, as in wasmtime.
_ERRNO: dict[int, str] = {
    errno.EACCES: "access",
    errno.EAGAIN: "would-block",
    errno.EALREADY: "already",
    errno.EBADF: "bad-descriptor",
    errno.EBUSY: "busy",
    errno.EDEADLK: "deadlock",
    errno.EDQUOT: "quota",
    errno.EEXIST: "exist",
    errno.EFBIG: "file-too-large",
    errno.EILSEQ: "illegal-byte-sequence",
    errno.EINPROGRESS: "in-progress",
    errno.EINTR: "interrupted",
    errno.EINVAL: "invalid",
    errno.EIO: "io",
    errno.EISDIR: "is-directory",
    errno.ELOOP: "loop",
    errno.EMLINK: "too-many-links",
    errno.EMSGSIZE: "message-size",
    errno.ENAMETOOLONG: "name-too-long",
    errno.ENODEV: "no-device",
    errno.ENOENT: "no-entry",
    errno.ENOLCK: "no-lock",
    errno.ENOMEM: "insufficient-memory",
    errno.ENOSPC: "insufficient-space",
    errno.ENOTDIR: "not-directory",
    errno.ENOTEMPTY: "not-empty",
    errno.ENOTRECOVERABLE: "not-recoverable",
    errno.ENOTSUP: "unsupported",
    errno.EOPNOTSUPP: "unsupported",
    errno.ENOSYS: "unsupported",
    errno.ENOTTY: "no-tty",
    errno.ENXIO: "no-such-device",
    errno.EOVERFLOW: "overflow",
    errno.EPERM: "not-permitted",
    errno.EPIPE: "pipe",
    errno.EROFS: "read-only",
    errno.ESPIPE: "invalid-seek",
    errno.ETXTBSY: "text-file-busy",
    errno.EXDEV: "cross-device",
}


def error_code(exc: OSError) -> str:
    """The ``error-code`` for an OS error (``io`` when the errno has no case)."""
    return _ERRNO.get(exc.errno or 0, "io")


P = ParamSpec("P")
R = TypeVar("R")


def maps_os_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a host method so an ``OSError`` reaches the guest as ``Err(error-code)``."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            raise Err(error_code(e)) from None

    return call


def fs_error(code: str) -> Err:
    """The guest-visible error ``code`` (checked against the WIT's cases)."""
    if code not in ERROR_CODES:
        raise ValueError(f"not a wasi:filesystem error-code: {code!r}")
    return Err(code)


def stream_error_code(code: Any) -> str | None:
    """What ``filesystem-error-code`` answers for a ``wasi:io/error``'s ``code``."""
    return code if isinstance(code, str) and code in ERROR_CODES else None
