"""A minimal driver written straight against wasmtime's component C API.

This is the benchmark floor for fabric's engine bridge: the same async host
import and the same call-future driving loop, without marshaling plans,
resource tables, deadlines or error mapping.  It knows exactly one guest
shape (``tests/guests/wat/hostcall.wat`` and ``tiny.wat``) and nothing else.
"""

from __future__ import annotations

import asyncio
import ctypes
from typing import Any

import wasmtime
from wasmtime import component as wc

from fabric.engine import _capi as c

_byref = ctypes.byref


class _State:
    parked: Any = None
    ready = False


_STATE = _State()


async def _trivial() -> None:
    return None


def _sync_noop(env: int, ctx: Any, fty: Any, args: Any, n: int, res: Any, nres: int) -> int:
    return 0


def _continuation(env: int) -> bool:
    if _STATE.ready:
        _STATE.ready = False
        return True
    return False


def _async_noop(
    env: int, ctx: Any, fty: Any, args: Any, n: int, res: Any, nres: int, err: Any, cont: Any
) -> None:
    k = cont.contents
    k.callback = _CONT
    k.env = 1
    k.finalizer = _FIN
    _STATE.parked = _trivial()


def _fin(env: int) -> None:
    return None


_SYNC = c.FuncCallback(_sync_noop)
_ASYNC = c.AsyncFuncCallback(_async_noop)
_CONT = c.ContinuationCallback(_continuation)
_FIN = c.Finalizer(_fin)


async def drive(fut: Any) -> None:
    poll = c.call_future_poll
    state = _STATE
    try:
        while not poll(fut):
            coro = state.parked
            if coro is not None:
                state.parked = None
                await coro
                state.ready = True
            else:
                await asyncio.sleep(0)
    finally:
        c.call_future_delete(fut)


class RawGuest:
    """One engine, one linker, one component; a store per instantiation."""

    def __init__(self, wasm: bytes, *, with_host: bool = True) -> None:
        self.engine = wasmtime.Engine()
        self.component = wc.Component(self.engine, wasm)
        self.linker = c.linker_new(self.engine.ptr())
        if with_host:
            root = c.linker_root(self.linker)
            child = c.LINKER_INSTANCE_P()
            name = b"fabric:bench/host"
            self._check(c.linker_instance_add_instance(root, name, len(name), _byref(child)))
            self._check(c.linker_instance_add_func(child, b"noop", 4, _SYNC, None, _FIN))
            self._check(
                c.linker_instance_add_func_async(child, b"noop-async", 10, _ASYNC, None, _FIN)
            )
            c.linker_instance_delete(child)
            c.linker_instance_delete(root)
        self.store: Any = None
        self.funcs: dict[str, Any] = {}

    @staticmethod
    def _check(err: Any) -> None:
        if err:
            raise RuntimeError(c.take_error(err)[0])

    async def _instantiate(self) -> tuple[Any, Any, Any]:
        store = c.store_new(self.engine.ptr(), 1, _FIN)
        ctx = c.store_context(store)
        inst = c.COMPONENT_INSTANCE()
        err = c.ERROR_P()
        fut = c.linker_instantiate_async(
            self.linker, ctx, self.component.ptr(), _byref(inst), _byref(err)
        )
        await drive(fut)
        self._check(err)
        return store, ctx, inst

    async def start(self) -> None:
        self.store, self.ctx, self.inst = await self._instantiate()

    async def instantiate_once(self) -> None:
        store, _, _ = await self._instantiate()
        c.store_delete(store)

    def _func(self, name: str) -> Any:
        f = self.funcs.get(name)
        if f is None:
            raw = name.encode()
            idx = c.get_export_index(self.component.ptr(), None, raw, len(raw))
            f = c.COMPONENT_FUNC()
            c.instance_get_func(_byref(self.inst), self.ctx, idx, _byref(f))
            c.export_index_delete(idx)
            self.funcs[name] = f
        return f

    async def call_u32(self, name: str, value: int) -> None:
        f = self._func(name)
        args = (c.VAL * 1)()
        args[0].kind = c.K_U32
        args[0].of.u32 = value
        results = (c.VAL * 1)()
        err = c.ERROR_P()
        fut = c.func_call_async(_byref(f), self.ctx, args, 1, results, 0, _byref(err))
        await drive(fut)
        self._check(err)

    def close(self) -> None:
        if self.store is not None:
            c.store_delete(self.store)
            self.store = None
