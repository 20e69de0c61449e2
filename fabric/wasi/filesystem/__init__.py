"""``wasi:filesystem`` — preopened host directories, sandboxed.

A guest sees only the directories its :class:`~fabric.wasi.context.WasiConfig`
preopens (none by default), each under its guest path, read-write or
read-only.  Modules:

* :mod:`.errors` — the WIT error codes and the one OS-error mapping;
* :mod:`.paths` — path resolution that never leaves a directory;
* :mod:`.descriptor` — ``descriptor`` and ``directory-entry-stream``;
* :mod:`.streams` — shared file descriptors and the file streams.

wasmtime's ``wasmtime-wasi`` (cap-std underneath) is the reference wherever
the WIT leaves a choice; the module docstrings list those choices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fabric.engine import HostInterface, TrapError

from ..io import IoError
from .descriptor import Descriptor, DirectoryEntryStream
from .errors import ERROR_CODES, error_code, stream_error_code
from .streams import FilesystemStatistics, statistics

__all__ = [
    "DESCRIPTOR_METHODS",
    "ERROR_CODES",
    "Descriptor",
    "DirectoryEntryStream",
    "FilesystemStatistics",
    "error_code",
    "filesystem_error_code",
    "get_directories",
    "interfaces",
    "statistics",
]

#: Every method of ``descriptor`` (WIT names; the Python method has ``_`` for ``-``).
DESCRIPTOR_METHODS = (
    "read-via-stream",
    "write-via-stream",
    "append-via-stream",
    "advise",
    "sync-data",
    "get-flags",
    "get-type",
    "set-size",
    "set-times",
    "read",
    "write",
    "read-directory",
    "sync",
    "create-directory-at",
    "stat",
    "stat-at",
    "set-times-at",
    "link-at",
    "open-at",
    "readlink-at",
    "remove-directory-at",
    "rename-at",
    "symlink-at",
    "unlink-file-at",
    "is-same-object",
    "metadata-hash",
    "metadata-hash-at",
)


def get_directories(cx: Any) -> list[tuple[Descriptor, str]]:
    """``preopens.get-directories``: a fresh descriptor for each configured preopen.

    Each call opens the host directories again, so every handle the guest
    gets is its own (the guest may drop them independently).  A preopen whose
    host directory cannot be opened traps the guest: that is a configuration
    error, not something the guest can handle.
    """
    opened: list[tuple[Descriptor, str]] = []
    for preopen in cx.config.preopens:
        try:
            desc = Descriptor.open_directory(preopen.host, readonly=preopen.readonly)
        except OSError as e:
            for desc, _ in opened:
                desc.close()
            raise TrapError(
                f"preopen {preopen.host!r} (guest {preopen.guest!r}): {e.strerror or e}"
            ) from None
        opened.append((desc, preopen.guest))
    return opened


def filesystem_error_code(err: IoError) -> str | None:
    """``filesystem-error-code``: the error code a file stream's error carries."""
    return stream_error_code(err.code)


def _method(name: str) -> Callable[..., Any]:
    method = getattr(Descriptor, name.replace("-", "_"))

    def call(cx: Any, desc: Descriptor, *args: Any) -> Any:
        return method(desc, *args)

    call.__name__ = f"descriptor_{name.replace('-', '_')}"
    return call


def interfaces(version: str) -> list[HostInterface]:
    types = HostInterface(f"wasi:filesystem/types@{version}")
    types.resource("descriptor", Descriptor)
    types.resource("directory-entry-stream", DirectoryEntryStream)
    for name in DESCRIPTOR_METHODS:
        types.func(f"[method]descriptor.{name}", _method(name))
    types.func(
        "[method]directory-entry-stream.read-directory-entry",
        lambda cx, stream: stream.read_directory_entry(),
    )
    types.func("filesystem-error-code", lambda cx, err: filesystem_error_code(err))

    preopens = HostInterface(f"wasi:filesystem/preopens@{version}")
    preopens.func("get-directories", get_directories)
    return [types, preopens]
