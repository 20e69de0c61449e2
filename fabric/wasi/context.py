"""Per-guest WASI state: what a guest sees as its process.

``WasiConfig`` is the declarative part (arguments, environment, preopened
directories); ``WasiCtx`` is the live object handed to every host function
as its first argument (the store's ``data``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from .io import BytesInput, InputStream, OutputStream, SinkOutput


class Preopen(msgspec.Struct, frozen=True, kw_only=True):
    """A host directory made visible to the guest under ``guest``."""

    host: str
    guest: str
    readonly: bool = False


class WasiConfig(msgspec.Struct, kw_only=True):
    args: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    preopens: list[Preopen] = msgspec.field(default_factory=list)
    cwd: str | None = None


def _discard(data: bytes) -> None:
    return None


class WasiCtx:
    """The host side of one guest instance."""

    def __init__(
        self,
        config: WasiConfig | None = None,
        *,
        name: str = "guest",
        stdin: InputStream | None = None,
        stdout: Callable[[bytes], Any] = _discard,
        stderr: Callable[[bytes], Any] = _discard,
        sockets: Any = None,
        attach: Callable[[], Any] | None = None,
    ) -> None:
        """``attach``: makes the network handle when the guest first asks for it
        (and ``sockets`` is None), so a guest that never touches the network
        costs no handle."""
        self.config = config or WasiConfig()
        self.name = name
        self.stdin = stdin if stdin is not None else BytesInput(b"")
        self._out = SinkOutput(stdout)
        self._err = SinkOutput(stderr)
        self.stdout: OutputStream = self._out
        self.stderr: OutputStream = self._err
        self._sockets = sockets
        self._attach = attach if sockets is None else None
        self.exit_code: int | None = None

    @property
    def sockets(self) -> Any:
        """The guest's view of the network (``fabric.wasi.sockets``)."""
        net = self._sockets
        if net is None and self._attach is not None:
            attach, self._attach = self._attach, None
            net = self._sockets = attach()
        return net

    @sockets.setter
    def sockets(self, net: Any) -> None:
        self._sockets = net
        self._attach = None

    def rebind(
        self,
        config: WasiConfig,
        *,
        name: str,
        stdout: Callable[[bytes], Any] = _discard,
        stderr: Callable[[bytes], Any] = _discard,
    ) -> None:
        """The next invocation of a reused instance: fresh arguments,
        environment, name and stdio routing; the network handle stays."""
        self.config = config
        self.name = name
        self._out.retarget(stdout)
        self._err.retarget(stderr)
        self.stdout = self._out
        self.stderr = self._err
        self.exit_code = None

    def close(self) -> None:
        """The guest instance is gone: release its network handle."""
        net, self._sockets = self._sockets, None
        self._attach = None
        if net is not None:
            net.close()

    def __repr__(self) -> str:
        return f"<WasiCtx {self.name} args={len(self.config.args)} env={len(self.config.env)}>"
