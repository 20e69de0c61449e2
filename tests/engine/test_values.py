"""Every component value kind crosses the boundary both ways, intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from benches.hostvalues import EXPORT, Counter, HostFailure, values_linker
from fabric.engine import Err, GuestTrap, InstanceDead, Ok
from fabric.runtime import Runtime
from fabric.wasi import WasiCtx


@pytest.fixture
async def values(runtime: Runtime, values_guest: Path):  # type: ignore[no-untyped-def]
    linker = values_linker(runtime)
    comp = runtime.load(values_guest, linker=linker)
    inst = await runtime.instantiate(comp, WasiCtx(), linker=linker)
    yield inst
    inst.store.close()


CASES = [
    ("echo-bool", True),
    ("echo-bool", False),
    ("echo-s8", -128),
    ("echo-u64", 2**64 - 1),
    ("echo-s64", -(2**63)),
    ("echo-f64", 3.5),
    ("echo-char", "\U0001f600"),
    ("echo-string", "héllo, wörld"),
    ("echo-string", ""),
    ("echo-bytes", bytes(range(256)) * 300),
    ("echo-bytes", b""),
    ("echo-list", ["a", "", "ccc"]),
    ("echo-point", {"x": -5, "y": 7, "label": "p"}),
    ("echo-tuple", (1, "one", True)),
    ("echo-shape", ("circle", 1.25)),
    ("echo-shape", ("square", {"x": 1, "y": 2, "label": "sq"})),
    ("echo-shape", ("empty", None)),
    ("echo-color", "green"),
    ("echo-perms", frozenset({"read", "exec"})),
    ("echo-perms", frozenset()),
    ("echo-option", None),
    ("echo-option", "some"),
    ("echo-result", Ok(42)),
    ("echo-result", Err("nope")),
]


@pytest.mark.parametrize(
    ("func", "value"), CASES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(CASES)]
)
async def test_export_round_trip(values, func: str, value: object) -> None:  # type: ignore[no-untyped-def]
    assert await values.call(f"{EXPORT}#{func}", value) == value


async def test_host_import_round_trip(values) -> None:  # type: ignore[no-untyped-def]
    assert await values.call(f"{EXPORT}#check-host") == "ok"


async def test_host_resource_lifecycle(values) -> None:  # type: ignore[no-untyped-def]
    before_closed = Counter.closed
    assert await values.call(f"{EXPORT}#use-counter", 10, 5) == 15
    # The guest dropped its handle: the host destructor ran.
    assert Counter.closed == before_closed + 1
    assert values.store.resources == 0


async def test_async_host_import_suspends_guest(values) -> None:  # type: ignore[no-untyped-def]
    assert await values.call(f"{EXPORT}#slow", "later", 20) == "later"
    assert values.store.host_calls >= 1


async def test_host_exception_traps_guest_and_keeps_cause(values) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GuestTrap) as info:
        await values.call(f"{EXPORT}#call-fail")
    assert isinstance(info.value.__cause__, HostFailure)
    assert "host refused 1" in str(info.value)
    # A failed instance is poisoned: later calls are refused, not undefined.
    with pytest.raises(InstanceDead):
        await values.call(f"{EXPORT}#echo-bool", True)


async def test_bad_argument_is_a_python_error(values) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError):
        await values.call(f"{EXPORT}#echo-s8", 1000)
    with pytest.raises(ValueError, match="Unicode scalar"):
        await values.call(f"{EXPORT}#echo-char", "\ud800")
    # Nothing was entered: the instance still works.
    assert await values.call(f"{EXPORT}#echo-s8", 5) == 5


async def test_bulk_bytes_both_ways(values) -> None:  # type: ignore[no-untyped-def]
    assert await values.call(f"{EXPORT}#push", 1 << 20, 65536) == 1 << 20
    assert await values.call(f"{EXPORT}#pull", 1 << 20, 65536) == 1 << 20


def test_host_resource_boxes_are_read_in_place() -> None:
    # The shipped library keeps a host handle's rep and type where the codecs
    # read and rewrite them (checked against its accessors at import), so the
    # tests here run the one-C-call path for every handle.
    from fabric.engine import _capi as c

    assert c.HOST_BOX_IN_PLACE
    box = c.raw_host_new(False, 77, 5)
    try:
        assert c.HostBoxFields.from_address(box).rep == 77
    finally:
        c.raw_host_delete(box)


async def test_store_context_is_the_one_host_calls_run_in(runtime: Runtime) -> None:
    # Codecs convert resources with the store's own context during host
    # calls: it must name the store whose guest is calling.
    from fabric.engine import HostInterface
    from fabric.engine import _capi as c
    from fabric.engine.callbacks import ACTIVE
    from tests.guestlib import wat_guest

    seen: list[tuple[int, int]] = []

    def noop(cx: object) -> None:
        store = ACTIVE[0]
        assert store is not None
        seen.append((store.id, c.raw_context_get_data(store.cx)))  # type: ignore[attr-defined]

    async def noop_async(cx: object) -> None:
        return None

    linker = runtime.new_linker()
    host = HostInterface("fabric:bench/host")
    host.func("noop", noop)
    host.func("noop-async", noop_async)
    linker.define(host)
    comp = runtime.load(wat_guest("hostcall"), linker=linker)
    first = await runtime.instantiate(comp, WasiCtx(), linker=linker)
    second = await runtime.instantiate(comp, WasiCtx(), linker=linker)
    try:
        await first.call("call-n", 2)
        await second.call("call-n", 1)
    finally:
        first.store.close()
        second.store.close()
    assert seen == [(first.store.id, first.store.id)] * 2 + [(second.store.id, second.store.id)]


def test_boxed_small_integers_are_never_a_shared_buffer() -> None:
    # ``val_new`` moves the value out of its source and leaves Bool(false)
    # there: a payload boxed twice from one shared buffer would be a bool the
    # second time (the guest then sees "type mismatch: expected u64").
    import ctypes

    from fabric.engine import _capi as c
    from fabric.engine.values import IntCodec

    codec = IntCodec(c.K_U64, "u64", 0, 2**64 - 1)
    for _ in range(3):
        boxed = codec.box(5, None)  # type: ignore[arg-type]
        val = c.VAL.from_address(boxed)
        assert (val.kind, val.of.u64) == (c.K_U64, 5)
        c.lib.wasmtime_component_val_free(ctypes.cast(boxed, c.VAL_P))
    assert codec.packed(5)[0] == c.K_U64
