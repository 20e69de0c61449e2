"""The component binary reader and the fast_bytes composer on small WAT guests.

The guest is the one nested in ``tests/guests/wat/latin1_echo.wat``, built on
its own: it imports ``wasi:io/error`` and three functions of
``wasi:io/streams`` and exports ``echo(in, out, n)``. The net guest composed
and run end to end is in ``tests/wasi/test_fast_bytes.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.build import BuildError, build_wat_guest
from fabric.component_binary import (
    SORT_FUNC,
    SORT_INSTANCE,
    SORT_TYPE,
    ComponentBinaryError,
    read_component,
    u32,
)
from fabric.component_rewrite import redirect_stream_lowerings
from fabric.compose import LATIN1_IMPORT, bridge_wat, build_fast_bytes_guest
from fabric.runtime import Runtime
from fabric.wasi import WasiCtx
from fabric.wasi.io import BytesInput, SinkOutput

ECHO = Path(__file__).resolve().parent / "guests" / "wat" / "latin1_echo.wat"
EVERY_BYTE = bytes(range(256))
STREAMS = "wasi:io/streams@0.2.0"


# The guest's echo, exported in an instance as an interface: a composed
# component re-exports instances (a function exported at the root would need
# a type ascription naming the outer's types).
EXPORTED = """
    (component $iface
      (import "input-stream" (type $is (sub resource)))
      (import "output-stream" (type $os (sub resource)))
      (import "echo" (func $e (param "in" (own $is)) (param "out" (own $os)) (param "n" u32)
        (result u32)))
      (export $is2 "input-stream" (type $is))
      (export $os2 "output-stream" (type $os))
      (export "echo" (func $e)
        (func (param "in" (own $is2)) (param "out" (own $os2)) (param "n" u32) (result u32)))
    )
    (instance $x (instantiate $iface (with "input-stream" (type $is))
      (with "output-stream" (type $os)) (with "echo" (func $echo))))
    (export "fabric:test/echo" (instance $x))
  )
"""


def echo_guest() -> Path:
    text = ECHO.read_text()
    guest = text[text.index("  (component $guest") : text.index("  (instance $g")]
    guest = guest.replace('(func (export "echo") (param "in"', '(func $echo (param "in"')
    return build_wat_guest(guest[: guest.rindex(")")] + EXPORTED)


def test_leb128() -> None:
    assert [u32(v) for v in (0, 127, 128, 624485)] == [
        b"\x00", b"\x7f", b"\x80\x01", b"\xe5\x8e\x26"
    ]  # fmt: skip


def test_reads_imports_their_indices_and_the_streams_functions() -> None:
    shape = read_component(echo_guest().read_bytes())
    assert [(i.name, i.sort, i.index) for i in shape.imports] == [
        ("wasi:io/error@0.2.0", SORT_INSTANCE, 0),
        (STREAMS, SORT_INSTANCE, 1),
    ]
    # two instance types and the error resource aliased between the imports
    assert shape.counts[SORT_TYPE] == 3
    streams = shape.import_named("wasi:io/streams")
    assert streams is not None and streams.type_index is not None
    funcs = [n for n, sort in shape.instance_types[streams.type_index] if sort == SORT_FUNC]
    assert funcs == [
        "[method]output-stream.check-write",
        "[method]output-stream.write",
        "[method]input-stream.read",
    ]
    assert [(e.name, e.sort) for e in shape.exports] == [("fabric:test/echo", SORT_INSTANCE)]


def test_not_a_component() -> None:
    with pytest.raises(ComponentBinaryError, match="bad preamble"):
        read_component(b"\x00asm\x01\x00\x00\x00")


def test_a_guest_without_streams_is_refused(tmp_path: Path) -> None:
    guest = build_wat_guest('(component (import "f" (func)))')
    with pytest.raises(
        BuildError, match=r"fast_bytes: cannot compose .* does not import wasi:io/streams"
    ):
        build_fast_bytes_guest(guest)


def test_bridge_covers_only_what_the_guest_imports() -> None:
    text = bridge_wat(["[method]output-stream.check-write", "[method]input-stream.read"])
    assert '(export "read"' in text and '"fabric-latin1-read"' in text
    assert "write" not in text.replace("check-write", "")
    assert '"poll"' not in text  # no subscribe: no wasi:io/poll import
    with pytest.raises(BuildError, match="unknown to the composer"):
        bridge_wat(["[method]output-stream.frobnicate"])


def test_the_guest_lowers_latin1_functions_and_nothing_else_moves() -> None:
    data = echo_guest().read_bytes()
    shape = read_component(data)
    rewritten, funcs = redirect_stream_lowerings(data, shape)
    assert funcs == ["[method]output-stream.write", "[method]input-stream.read"]
    after = read_component(rewritten)
    # the same imports at the same indices, the streams type declaring more
    assert after.imports == shape.imports and after.counts == shape.counts
    streams = after.import_named("wasi:io/streams")
    assert streams is not None and streams.type_index is not None
    declared = [n for n, _ in after.instance_types[streams.type_index]]
    assert declared[-2:] == ["fabric-latin1-write", "fabric-latin1-read"]
    assert after.exports == shape.exports


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    rt = Runtime()
    yield rt  # type: ignore[misc]
    rt.close()


async def test_composed_guest_moves_every_byte_through_latin1(runtime: Runtime) -> None:
    composed = runtime.load(build_fast_bytes_guest(echo_guest()))
    assert set(composed.imports) == {"wasi:io/error@0.2.0", STREAMS, LATIN1_IMPORT}
    # only read and write are forwarded; check-write stays the host's
    assert set(composed.imports[LATIN1_IMPORT]) == {"read", "write"}
    inst = await runtime.instantiate(composed, WasiCtx())
    payload = EVERY_BYTE * 1000
    got = bytearray()
    n = await inst.call(
        "fabric:test/echo#echo", BytesInput(payload), SinkOutput(got.extend), len(payload) + 99
    )
    assert n == len(payload)
    assert bytes(got) == payload
    inst.store.close()
