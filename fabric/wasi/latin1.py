"""``fabric:io/latin1``: the byte-moving stream calls with bytes as latin-1 strings.

wasmtime's C API moves a ``list<u8>`` as one 32-byte value per byte (~45-70
ns per byte), a ``string`` as one buffer (~5 ns per byte, see
docs/bytes-as-strings.md). A component lowering these imports with
``string-encoding=latin1+utf16`` passes a byte 0-255 as one latin-1 code
unit, so the bytes in its memory *are* the string: a guest composed with
``fast_bytes`` (``fabric.compose``) lowers these in place of its
``wasi:io/streams`` ``write`` / ``read`` (and their blocking forms), whose
core signatures they share. Semantics are those of ``wasi:io/streams``
(permits, errors, EOF): each function is the stream method of the same name.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from fabric.engine import HostInterface

from .io import InputStream, OutputStream

VERSION = "0.1.0"


def _write(cx: Any, s: OutputStream, contents: str) -> None:
    s.write(contents.encode("latin-1"))


def _blocking_write_and_flush(cx: Any, s: OutputStream, contents: str) -> Awaitable[None] | None:
    return s.blocking_write_and_flush_now(contents.encode("latin-1"))


def _read(cx: Any, s: InputStream, n: int) -> str:
    return s.read(n).decode("latin-1")


async def _decoded(pending: Awaitable[bytes]) -> str:
    return (await pending).decode("latin-1")


def _blocking_read(cx: Any, s: InputStream, n: int) -> str | Awaitable[str]:
    data = s.blocking_read_now(n)
    if isinstance(data, bytes):
        return data.decode("latin-1")
    return _decoded(data)


def interfaces() -> list[HostInterface]:
    iface = HostInterface(f"fabric:io/latin1@{VERSION}")
    iface.func("write", _write)
    iface.func("blocking-write-and-flush", _blocking_write_and_flush, is_async=True)
    iface.func("read", _read)
    iface.func("blocking-read", _blocking_read, is_async=True)
    return [iface]
