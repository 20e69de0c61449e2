"""The WASI 0.2 host: one module per interface family.

``define_wasi(linker)`` defines every interface in a linker, under the newest
0.2.x version fabric knows; wasmtime's linker matches imports of any other
0.2.x version to it (semver), so components built against 0.2.0 and 0.2.9
link alike. The interfaces (and their host functions) are built once per
process and shared by every linker (``wasi_interfaces``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from fabric.engine import HostInterface, Linker

from . import cli, clocks, io, random
from .context import Preopen, WasiConfig, WasiCtx

WASI_VERSION = "0.2.9"

InterfaceFactory = Callable[[str], list[HostInterface]]


def _families() -> list[InterfaceFactory]:
    from . import filesystem, latin1, sockets

    return [
        io.interfaces,
        # not WASI: the import of the latin-1 streams adapter (docs/bytes-as-strings.md)
        lambda version: latin1.interfaces(),
        clocks.interfaces,
        random.interfaces,
        cli.interfaces,
        filesystem.interfaces,
        sockets.interfaces,
    ]


@functools.cache
def wasi_interfaces(version: str = WASI_VERSION) -> tuple[HostInterface, ...]:
    """Every WASI interface, built once per process and shared by every linker."""
    return tuple(iface for family in _families() for iface in family(version))


def define_wasi(linker: Linker, version: str = WASI_VERSION) -> None:
    for iface in wasi_interfaces(version):
        linker.define(iface)


__all__ = ["WASI_VERSION", "Preopen", "WasiConfig", "WasiCtx", "define_wasi", "wasi_interfaces"]
