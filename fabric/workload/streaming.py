"""Guest output streamed to a control client as the guest writes it, with backpressure.

``fabric invoke`` of a command asks the control endpoint to stream: the guest's
stdout and stderr go out as ``output`` messages while it runs, instead of being
held and returned whole.  The guest's ``check-write`` sees no room while the
connection's send buffer is above ``HIGH_WATER``, so a client that reads
slowly slows the guest down rather than growing fabric's memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fabric.wasi.io import OutputStream, StreamClosed

__all__ = ["HIGH_WATER", "FlowOutput", "OutputFactory"]

HIGH_WATER = 256 * 1024  # bytes queued on the control connection before guests wait

OutputFactory = Callable[[str, Callable[[bytes], object] | None], OutputStream]
"""``factory("stdout" | "stderr", also)``: the stream a guest's output goes to;
``also`` (if given) must see every write too."""


class FlowOutput(OutputStream):
    """An output stream that sends each write through ``send`` while ``room()`` allows.

    ``room()`` is the number of bytes that may be written now (0: wait with
    ``wait()``; raising ``StreamClosed`` ends the stream); ``also`` sees every
    write too (fabric's own log of a guest's stderr).
    """

    def __init__(
        self,
        send: Callable[[bytes], None],
        room: Callable[[], int],
        wait: Callable[[], Awaitable[None]],
        also: Callable[[bytes], object] | None = None,
    ) -> None:
        self._send = send
        self._room = room
        self._wait = wait
        self._also = also

    def _check_write(self) -> int:
        return self._room()

    def _write(self, data: bytes) -> None:
        self._send(data)
        if self._also is not None:
            self._also(data)

    def _writable(self) -> bool:
        try:
            return self._room() > 0
        except StreamClosed:
            return True  # the next write reports the closed stream

    async def _wait_writable(self) -> None:
        await self._wait()
