"""Stores, instances and calls: guests as wasmtime fibers driven by asyncio.

One ``Store`` per guest instance.  A call into the guest creates a wasmtime
call future; ``Store._drive`` polls it from the calling task.  ``poll`` runs
wasm until the guest finishes, or suspends on an async host import, or
yields at an epoch tick.  wasmtime's waker is a no-op, so the driver never
waits for a wake-up: when a host coroutine is parked it awaits it inline (the
loop runs other guests meanwhile), records the outcome and polls again; when
nothing is parked the guest yielded for fairness, and the driver gives the
loop one turn.

Any error, trap or cancellation leaves the instance unusable (wasmtime
poisons it), so the store is marked dead and must be discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import _capi as c
from .callbacks import ACTIVE, STORES, HostFunc, continuation_template
from .errors import (
    DeadlineExceeded,
    EngineError,
    ExportNotFound,
    GuestTrap,
    InstanceDead,
    InstanceLimitReached,
    TrapError,
)
from .linker import Linker
from .values import Err, HostResource, Signature

if TYPE_CHECKING:
    from .engine import Component, Engine

_ids = itertools.count(1)
#: how wasmtime's pooling allocator words a slot it has none of left
_POOL_FULL = "maximum concurrent limit of"
_byref = ctypes.byref


class Store:
    """A wasmtime store holding one guest instance and its host state.

    ``data`` is handed to every host function as its first argument.
    """

    def __init__(
        self,
        engine: Engine,
        data: Any = None,
        *,
        max_memory: int | None = None,
    ) -> None:
        self.engine = engine
        self.data = data
        self.id = next(_ids)
        # No finalizers: the store's data and the epoch callback's are plain ids
        # that need no cleanup, and each finalizer would be a call back into
        # Python when the store is deleted.
        self._ptr = c.store_new(engine.ptr(), self.id, _NO_FINALIZER)
        self._ctx = c.store_context(self._ptr)
        self.max_memory = max_memory
        if max_memory is not None:
            c.store_limiter(self._ptr, max_memory, -1, -1, -1, -1)
        c.store_epoch_deadline_callback(self._ptr, _EPOCH, self.id, _NO_FINALIZER)
        c.context_set_epoch_deadline(self._ctx, 1)
        #: the context codecs pass to resource conversions, as a ready
        #: ``c_void_p``. The context a host call's callback receives is this
        #: same address for the store's whole life (``wasmtime_context_t`` is
        #: the store's inner state), so no callback needs to set it.
        self.cx: Any = ctypes.c_void_p(c.addr(self._ctx))
        self.deadline: float | None = None
        self.dead = False
        self.closed = False
        self.failure: BaseException | None = None
        self.failure_where = ""
        self._table: dict[int, HostResource] = {}
        self._reps = itertools.count(1)
        self._parked: Coroutine[Any, Any, Any] | None = None
        self._pending: tuple[Signature, Any, HostFunc] | None = None
        self._outcome: tuple[bool, Any] | None = None
        self._busy = False
        self._held_deadline: float | None = None
        self.calls = 0
        self.host_calls = 0
        self._continuation: bytes | None = None
        #: the engine's instance slots this store holds (one per instantiation, until close)
        self._slots = 0
        STORES[self.id] = self

    @property
    def continuation(self) -> bytes:
        """The async continuation template, made at the first async host call
        (most guests of a fresh instance make none)."""
        cont = self._continuation
        if cont is None:
            cont = self._continuation = continuation_template(self.id)
        return cont

    @continuation.setter
    def continuation(self, cont: bytes) -> None:
        self._continuation = cont

    # -- resource table (the ResourceScope protocol) --------------------------
    def ctx(self) -> Any:
        return self._ctx

    def lookup(self, rep: int) -> Any:
        try:
            return self._table[rep]
        except KeyError:
            raise EngineError(f"unknown resource handle {rep}") from None

    def take(self, rep: int) -> Any:
        try:
            return self._table.pop(rep)
        except KeyError:
            raise EngineError(f"unknown resource handle {rep}") from None

    def insert(self, obj: HostResource) -> int:
        rep = next(self._reps)
        self._table[rep] = obj
        return rep

    def table_pop(self, rep: int) -> HostResource | None:
        return self._table.pop(rep, None)

    @property
    def resources(self) -> int:
        return len(self._table)

    # -- host-call plumbing (called from the C callbacks) ----------------------
    def park(
        self, coro: Coroutine[Any, Any, Any], sig: Signature, results: Any, hf: HostFunc
    ) -> None:
        self._parked = coro
        self._pending = (sig, results, hf)
        self._outcome = None
        self.host_calls += 1

    def resume(self) -> bool:
        """The continuation: has the parked host coroutine finished?"""
        pending = self._pending
        if pending is None:
            return True
        outcome = self._outcome
        if outcome is None:
            return False
        self._pending = None
        self._outcome = None
        sig, results, hf = pending
        ok, value = outcome
        try:
            if not ok and not isinstance(value, Err):
                raise value
            if sig.result is not None:
                sig.result.lower_at(value, results, self)
        except BaseException as e:
            # After suspension there is no error channel: keep the real error
            # and hand wasmtime a value of the wrong kind so the call fails.
            self.record_host_failure(e, hf.qualname)
            if sig.result is not None:
                kind = c.K_U32 if sig.result.kind == c.K_BOOL else c.K_BOOL
                c.VAL.from_address(results).kind = kind
        return True

    def record_host_failure(self, exc: BaseException, where: str) -> None:
        if self.failure is None:
            self.failure = exc
            self.failure_where = where

    # -- driving ----------------------------------------------------------------
    def hold_deadline(self, deadline: float | None) -> None:
        """Let the caller hold one deadline scope (``asyncio.timeout_at(deadline)``)
        around several calls (instantiate, then the export): the calls check the
        deadline at epoch ticks but open no scope of their own.  A TimeoutError
        of the caller's scope goes through ``deadline_exceeded``."""
        self._held_deadline = deadline

    def deadline_exceeded(self) -> BaseException:
        """The error for a deadline reached in the caller's scope (the store is dead)."""
        self.dead = True
        self.record_host_failure(DeadlineExceeded("guest ran past its deadline"), "deadline")
        assert self.failure is not None
        return self.failure

    async def _drive(self, fut: Any) -> None:
        # One deadline scope for the whole call, not one per host coroutine:
        # most host calls finish without waiting, and a scope costs a timer.
        deadline = self.deadline
        try:
            if deadline is None or self._held_deadline is not None:
                await self._poll(fut)
            else:
                # At the deadline the scope cancels whatever the call awaits (a
                # host coroutine, an epoch yield) and raises TimeoutError; a
                # TimeoutError of a host coroutine is its outcome (see _poll).
                async with asyncio.timeout_at(deadline):
                    await self._poll(fut)
        except TimeoutError as e:
            self.dead = True
            self.record_host_failure(DeadlineExceeded("guest ran past its deadline"), "deadline")
            raise self.failure from e  # type: ignore[misc]
        except BaseException:
            self.dead = True
            raise
        finally:
            self._parked = None
            c.call_future_delete(fut)

    async def _poll(self, fut: Any) -> None:
        poll = c.call_future_poll
        active = ACTIVE
        while True:
            active[0] = self  # the callbacks' store, without a lookup per call
            try:
                done = poll(fut)
            finally:
                active[0] = None
            if done:
                return
            coro = self._parked
            if coro is None:
                await asyncio.sleep(0)  # an epoch yield: let the loop run
                continue
            self._parked = None
            try:
                value = await coro
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # the guest sees it (an Err) or traps on it
                self._outcome = (False, e)
            else:
                self._outcome = (True, value)

    async def _run(self, start: Any, err: Any, timeout: float | None) -> None:
        if self.dead:
            raise InstanceDead("the instance failed earlier and cannot be entered again")
        if self._busy:
            raise EngineError("a store runs one call at a time")
        self._busy = True
        self.calls += 1
        if self._held_deadline is not None:
            self.deadline = self._held_deadline
        else:
            self.deadline = None if timeout is None else time.monotonic() + timeout
        try:
            await self._drive(start)
        finally:
            self._busy = False
            self.deadline = None
        if err:
            msg, trace = c.take_error(err)
            self.dead = True
            failure = self.failure
            if failure is not None:
                if isinstance(failure, TrapError):
                    raise GuestTrap(str(failure), trace) from None
                if isinstance(failure, EngineError):
                    raise failure
                raise GuestTrap(
                    f"{self.failure_where}: {type(failure).__name__}: {failure}",
                    trace,
                ) from failure
            raise GuestTrap(msg, trace)

    async def instantiate(
        self, linker: Linker, component: Component, *, timeout: float | None = None
    ) -> Instance:
        if self.closed:
            raise InstanceDead("the store is closed")
        self.engine.take_instance_slot()  # InstanceLimitReached: nothing is instantiated
        self._slots += 1
        out = c.COMPONENT_INSTANCE()
        err = c.ERROR_P()
        fut = c.linker_instantiate_async(
            linker.ptr(), self._ctx, component.ptr(), _byref(out), _byref(err)
        )
        try:
            await self._run(fut, err, timeout)
        except GuestTrap as e:
            limit = self.engine.instance_limit
            if limit is not None and e.message.startswith(_POOL_FULL):
                raise InstanceLimitReached(limit, e.message) from None
            raise
        return Instance(self, component, out)

    # -- lifetime -----------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.dead = True
        c.store_delete(self._ptr)
        STORES.pop(self.id, None)
        if self._slots:
            self.engine.give_instance_slots(self._slots)
            self._slots = 0
        # wasmtime runs no destructor for handles still in the guest's table.
        table, self._table = self._table, {}
        for obj in table.values():
            with contextlib.suppress(Exception):  # best effort at teardown
                obj.close()
        closer = getattr(self.data, "close", None)
        if closer is not None:
            closer()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "dead" if self.dead else "live"
        return (
            f"<Store #{self.id} {state} calls={self.calls} host_calls={self.host_calls} "
            f"resources={len(self._table)}>"
        )


class Func:
    """An exported function of an instance."""

    __slots__ = ("_raw", "name", "sig")

    def __init__(self, name: str, raw: Any, sig: Signature) -> None:
        self.name = name
        self._raw = raw
        self.sig = sig


class Instance:
    """An instantiated component inside its store."""

    def __init__(self, store: Store, component: Component, raw: Any) -> None:
        self.store = store
        self.component = component
        self._raw = raw
        self._funcs: dict[str, Func] = {}

    def func(self, name: str) -> Func:
        """Look up an export: ``"run"``, or ``"wasi:cli/run@0.2.0#run"`` for a
        function inside an exported instance.  The export index and the
        signature are looked up once per component and shared by its instances."""
        f = self._funcs.get(name)
        if f is not None:
            return f
        cached = self.component.export_funcs.get(name)
        ctx = self.store.ctx()
        raw = c.COMPONENT_FUNC()
        if cached is not None:
            idx, sig = cached
            if not c.instance_get_func(_byref(self._raw), ctx, idx, _byref(raw)):
                raise ExportNotFound(f"{self.component.path}: export {name!r} is not a function")
            f = Func(name, raw, sig)
            self._funcs[name] = f
            return f
        parent: Any = None
        idx = None
        made = []
        try:
            for part in name.split("#"):
                b = part.encode()
                idx = c.get_export_index(self.component.ptr(), parent, b, len(b))
                if not idx:
                    raise ExportNotFound(f"{self.component.path}: no export named {name!r}")
                made.append(idx)
                parent = idx
            if not c.instance_get_func(_byref(self._raw), ctx, idx, _byref(raw)):
                raise ExportNotFound(f"{self.component.path}: export {name!r} is not a function")
            fty = c.func_type(_byref(raw), ctx)
            try:
                sig = Signature.from_func_type(fty)
            finally:
                c.lib.wasmtime_component_func_type_delete(fty)
            made.pop()  # the function's own index stays, cached on the component
            self.component.export_funcs[name] = (idx, sig)
        finally:
            for i in made:
                c.export_index_delete(i)
        f = Func(name, raw, sig)
        self._funcs[name] = f
        return f

    async def call(self, func: Func | str, *args: Any, timeout: float | None = None) -> Any:
        """Call an export; returns the lifted result (``None`` when it has none)."""
        f = self.func(func) if isinstance(func, str) else func
        store = self.store
        sig = f.sig
        if len(args) != len(sig.params):
            raise TypeError(f"{f.name} takes {len(sig.params)} arguments, got {len(args)}")
        n = len(args)
        argv = (c.VAL * max(n, 1))()
        lowered = 0
        try:
            for i, codec in enumerate(sig.params):
                codec.lower(args[i], argv[i], store)
                lowered += 1
            nres = 1 if sig.result is not None else 0
            results = (c.VAL * 1)()
            err = c.ERROR_P()
            fut = c.func_call_async(_byref(f._raw), store._ctx, argv, n, results, nres, _byref(err))
            await store._run(fut, err, timeout)
            if sig.result is None:
                return None
            try:
                return sig.result.lift(results[0], store)
            finally:
                c.val_delete(_byref(results[0]))
        finally:
            for i in range(lowered):
                c.val_delete(_byref(argv[i]))

    def __repr__(self) -> str:
        return f"<Instance of {self.component.path} in {self.store!r}>"


def _epoch(ctx: Any, env: int, delta_out: Any, kind_out: Any) -> int:
    store = STORES.get(env)
    if store is not None and store.deadline is not None and time.monotonic() >= store.deadline:
        store.record_host_failure(DeadlineExceeded("guest ran past its deadline"), "deadline")
        return int(c.error_new_addr(b"deadline exceeded") or 0)
    delta_out[0] = 1
    kind_out[0] = 1  # yield to the event loop, then continue
    return 0


_EPOCH = c.EpochCallback(_epoch)
_NO_FINALIZER = c.Finalizer()  # a NULL function pointer: wasmtime calls none
