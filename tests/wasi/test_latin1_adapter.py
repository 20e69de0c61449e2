"""The latin-1 streams adapter (``fabric/wasi/adapters/latin1_streams.wat``).

A guest that imports ``wasi:io/streams`` and moves ``list<u8>`` is composed
with the adapter (``tests/guests/wat/latin1_echo.wat``): its ``read`` and
``write`` reach the host as latin-1 strings through ``fabric:io/latin1``, and
the host's other stream functions (``check-write``) pass through unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.build import build_wat_guest
from fabric.runtime import Runtime
from fabric.wasi import WasiCtx
from fabric.wasi.adapters import LATIN1_STREAMS
from fabric.wasi.io import BytesInput, SinkOutput

ECHO = Path(__file__).resolve().parent.parent / "guests" / "wat" / "latin1_echo.wat"
EVERY_BYTE = bytes(range(256))


def _echo_component(through_adapter: bool) -> Path:
    text = ECHO.read_text().replace("  ADAPTER\n", LATIN1_STREAMS.read_text())
    return build_wat_guest(
        text.replace("STREAMS", "$adapted" if through_adapter else "$streams-in")
    )


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    rt = Runtime()
    yield rt  # type: ignore[misc]
    rt.close()


@pytest.mark.parametrize("through_adapter", [True, False], ids=["adapter", "list-u8"])
async def test_every_byte_value_crosses_intact(runtime: Runtime, through_adapter: bool) -> None:
    inst = await runtime.instantiate(runtime.load(_echo_component(through_adapter)), WasiCtx())
    payload = EVERY_BYTE * 1000  # 256,000 bytes: several 64 KiB reads and writes
    got = bytearray()
    # asks for more than there is: the guest stops at the stream's `closed` error
    n = await inst.call("echo", BytesInput(payload), SinkOutput(got.extend), len(payload) + 99)
    assert n == len(payload)
    assert bytes(got) == payload
    inst.store.close()


async def test_a_stream_error_reaches_the_guest_through_the_adapter(runtime: Runtime) -> None:
    inst = await runtime.instantiate(runtime.load(_echo_component(True)), WasiCtx())
    sink = SinkOutput(lambda data: None)

    def refuse(data: bytes) -> None:
        raise BrokenPipeError("reader went away")

    sink.retarget(refuse)
    # the write fails (last-operation-failed): the guest stops after one chunk
    n = await inst.call("echo", BytesInput(EVERY_BYTE * 4), sink, 10_000)
    assert n == 0
    inst.store.close()
