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
