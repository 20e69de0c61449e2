"""The host side of the ``fabric:values`` test guest."""

from __future__ import annotations

import asyncio
from typing import Any

from fabric.engine import Err, HostInterface, HostResource, Linker, Ok
from fabric.runtime import Runtime


class Counter(HostResource):
    live = 0
    closed = 0

    def __init__(self, start: int) -> None:
        self.value = start
        Counter.live += 1

    def incr(self) -> int:
        self.value += 1
        return self.value

    def close(self) -> None:
        Counter.live -= 1
        Counter.closed += 1


class HostFailure(RuntimeError):
    pass


def host_interface(calls: list[str] | None = None) -> HostInterface:
    iface = HostInterface("fabric:values/host")
    iface.resource("counter", Counter)
    iface.func("make-counter", lambda cx, start: Counter(start))
    iface.func("[method]counter.incr", lambda cx, c: c.incr())
    for kind in (
        "bool s8 u16 s32 u64 s64 f32 f64 char string bytes list point tuple "
        "shape color perms option"
    ).split():
        iface.func(f"echo-{kind}", lambda cx, x: x)

    def echo_result(cx: Any, x: Any) -> Any:
        if isinstance(x, Err):
            raise x
        assert isinstance(x, Ok)
        return x.value

    iface.func("echo-result", echo_result)
    iface.func("sink-bytes", lambda cx, x: len(x))
    iface.func("source-bytes", lambda cx, n: b"z" * n)

    async def slow_echo(cx: Any, x: str, ms: int) -> str:
        await asyncio.sleep(ms / 1000)
        if calls is not None:
            calls.append(x)
        return x

    iface.func("slow-echo", slow_echo)

    def fail(cx: Any, x: int) -> int:
        raise HostFailure(f"host refused {x}")

    iface.func("fail", fail)
    return iface


def values_linker(rt: Runtime, calls: list[str] | None = None) -> Linker:
    linker = rt.new_linker()
    linker.define(HostInterface("fabric:values/types"))  # types only
    linker.define(host_interface(calls))
    return linker


EXPORT = "fabric:values/roundtrip"
