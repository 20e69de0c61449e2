"""The C callbacks every host function and resource runs through, and
what they share with the store: parking an async host call and resuming it.

Every host function is registered once per process (:class:`HostFunc`) with
one of two module-level ctypes callbacks (sync or async) and told apart by
an integer ``env`` id, so no closure has to outlive anything: wasmtime may
call a callback at any time while a linker or instance that names it lives,
and a Python closure collected before then would be a use-after-free.  The
callbacks run on the guest's fiber stack: they copy the arguments out, call
the Python implementation (a plain function; for async functions they create
the coroutine and :meth:`~HostCallStore.park` it on the store), and return.
The coroutine itself runs on the main stack, in the task that drives the
store (``store.py``), and :func:`_continuation` asks the store whether it has
finished.

An async host function may also be a plain function that returns either its
result, when it can answer at once, or a coroutine to park: the common case
of a ``poll`` or ``blocking-read`` that finds its stream ready then costs no
coroutine, no park and no second trip through the driver.

Host functions receive the store's ``data`` object first, then the lifted
arguments.  To return the error case of a WIT ``result`` they raise
:class:`~fabric.engine.values.Err`.  Any other exception traps the guest and
is re-raised, unchanged, by the call that was running.
"""

from __future__ import annotations

import ctypes
import itertools
import types
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from . import _capi as c
from .values import Err, HostResource, Signature

__all__ = [
    "ACTIVE",
    "STORES",
    "HostCallStore",
    "HostFunc",
    "HostImpl",
    "continuation_template",
    "host_function_count",
    "host_functions",
    "new_resource_tag",
]


class HostCallStore(Protocol):
    """What the callbacks need of a store (``fabric.engine.store.Store``)."""

    data: Any
    #: the context codecs use (a ``c_void_p``): the store's own, which is also
    #: the context every callback of this store receives
    cx: Any
    deadline: float | None
    host_calls: int
    continuation: bytes

    def ctx(self) -> Any: ...
    def lookup(self, rep: int) -> Any: ...
    def take(self, rep: int) -> Any: ...
    def insert(self, obj: HostResource) -> int: ...
    def table_pop(self, rep: int) -> HostResource | None: ...
    def park(
        self, coro: Coroutine[Any, Any, Any], sig: Signature, results: Any, hf: HostFunc
    ) -> None: ...
    def resume(self) -> bool: ...
    def record_host_failure(self, exc: BaseException, where: str) -> None: ...


HostImpl = Callable[..., Any]

#: env id -> host function (index 0 unused: ctypes reads a NULL void* as None)
_HOST_FUNCS: list[HostFunc | None] = [None]
#: store id -> live store
STORES: dict[int, HostCallStore] = {}
#: the store whose call future is being polled (its driver sets it before
#: every poll; only that store's wasm runs, so only its callbacks can fire)
ACTIVE: list[HostCallStore | None] = [None]
_tags = itertools.count(1)


class HostFunc:
    """One host function: its implementation and, once wasmtime has shown
    its type, the codecs bound for the trampolines (``lifts``, ``lower``)."""

    __slots__ = ("env", "impl", "interface", "is_async", "lifts", "lower", "name", "sig")

    def __init__(self, interface: str, name: str, impl: HostImpl, is_async: bool) -> None:
        self.interface = interface
        self.name = name
        self.impl = impl
        self.is_async = is_async
        self.sig: Signature | None = None
        self.lifts: tuple[Callable[[Any, Any], Any], ...] | None = None
        self.lower: Callable[[Any, Any, Any], None] | None = None
        self.env = len(_HOST_FUNCS)
        _HOST_FUNCS.append(self)

    def signature(self, fty: Any) -> Signature:
        sig = self.sig
        if sig is None:
            sig = self.sig = Signature.from_func_type(fty)
            self.lower = None if sig.result is None else sig.result.lower_at
            self.lifts = tuple(codec.lift_at for codec in sig.params)
        return sig

    def bind(self, fty: Any) -> tuple[Callable[[Any, Any], Any], ...]:
        """The parameter lifts, compiled from ``fty`` at the first call."""
        self.signature(fty)
        assert self.lifts is not None
        return self.lifts

    @property
    def qualname(self) -> str:
        return f"{self.interface}#{self.name}"


def host_function_count() -> int:
    """How many host functions this process has registered (they are never freed)."""
    return len(_HOST_FUNCS) - 1


def host_functions() -> list[HostFunc]:
    """Every host function registered in this process (profilers wrap their ``impl``)."""
    return [hf for hf in _HOST_FUNCS if hf is not None]


def new_resource_tag() -> int:
    """A fresh tag for a host resource type (one per Python resource class)."""
    return next(_tags)


# --- the callbacks ------------------------------------------------------------
# Every pointer arrives as an address (``c_void_p``: an int, or None for NULL);
# a parameter is the 32-byte value at ``args + 32 * i`` and the result is
# written at ``results`` (``Codec.lift_at`` / ``Codec.lower_at``).
_VAL_SIZE = c.VAL_SIZE


def _lift_args(lifts: tuple[Callable[[Any, Any], Any], ...], args: int, store: Any) -> Any:
    n = len(lifts)
    if n == 0:
        return ()
    if n == 1:
        return (lifts[0](args, store),)
    if n == 2:
        return (lifts[0](args, store), lifts[1](args + _VAL_SIZE, store))
    return [lift(args + _VAL_SIZE * i, store) for i, lift in enumerate(lifts)]


def _func_type(fty: int) -> Any:
    return ctypes.cast(fty, c.FUNC_TYPE_P)


def _sync_trampoline(
    env: int, ctx: int, fty: int, args: int, nargs: int, results: int, nresults: int
) -> int:
    hf = _HOST_FUNCS[env]
    # The store being polled (set by its driver before every poll): no
    # context lookup per call.
    store = ACTIVE[0]
    try:
        assert hf is not None
        if store is None:
            store = STORES[_get_data(ctx)]
        lifts = hf.lifts
        if lifts is None:
            lifts = hf.bind(_func_type(fty))
        n = len(lifts)
        try:
            if n == 1:
                value = hf.impl(store.data, lifts[0](args, store))
            elif n == 0:
                value = hf.impl(store.data)
            elif n == 2:
                value = hf.impl(
                    store.data, lifts[0](args, store), lifts[1](args + _VAL_SIZE, store)
                )
            else:
                value = hf.impl(store.data, *_lift_args(lifts, args, store))
        except Err as e:
            value = e
        lower = hf.lower
        if lower is not None:
            lower(value, results, store)
        return 0
    except BaseException as e:
        return _fail(store, hf, e)


def _async_trampoline(
    env: int,
    ctx: int,
    fty: int,
    args: int,
    nargs: int,
    results: int,
    nresults: int,
    err_ret: int,
    cont_ret: int,
) -> None:
    # The continuation must be set before anything can fail: wasmtime calls it
    # (and its finalizer) even when the host call reports an error, and an
    # unset one is a jump through garbage. One copy of a prebuilt template
    # (callback, env = store id, finalizer).
    store = ACTIVE[0]
    if store is None:
        store = STORES.get(_get_data(ctx) or 0)
    if store is None:
        _cont_at(cont_ret).raw = _ORPHAN_CONTINUATION
        _ptr_at(err_ret).value = _fail(None, _HOST_FUNCS[env], LookupError("unknown store"))
        return
    _cont_at(cont_ret).raw = store.continuation
    hf = _HOST_FUNCS[env]
    try:
        assert hf is not None
        lifts = hf.lifts
        if lifts is None:
            lifts = hf.bind(_func_type(fty))
        try:
            if len(lifts) == 1:
                value = hf.impl(store.data, lifts[0](args, store))
            else:
                value = hf.impl(store.data, *_lift_args(lifts, args, store))
        except Err as e:
            value = e
        if type(value) is _Coroutine:
            assert hf.sig is not None
            store.park(value, hf.sig, results, hf)
        else:
            # Finished without waiting: the result is lowered now and the
            # continuation reports it done at its first call (nothing parked).
            store.host_calls += 1
            lower = hf.lower
            if lower is not None:
                lower(value, results, store)
    except BaseException as e:
        _ptr_at(err_ret).value = _fail(store, hf, e)


def _continuation(env: int) -> bool:
    store = STORES.get(env)
    if store is None:
        return True
    return store.resume()


def _noop_finalizer(env: int) -> None:
    return None


def _destructor(env: int, ctx: int, rep: int) -> int:
    store = ACTIVE[0]
    try:
        if store is None:
            store = STORES[_get_data(ctx)]
        obj = store.table_pop(rep)
        if obj is not None:
            obj.drop()
        return 0
    except BaseException as e:
        return _fail(store, None, e)


def _fail(store: HostCallStore | None, hf: HostFunc | None, exc: BaseException) -> int:
    """Record why the guest is being stopped and hand wasmtime an error."""
    where = hf.qualname if hf is not None else "resource destructor"
    if store is not None:
        store.record_host_failure(exc, where)
    text = f"host function {where} failed: {type(exc).__name__}: {exc}"
    return int(c.error_new_addr(text.encode("utf-8", "replace")) or 0)


def continuation_template(store_id: int) -> bytes:
    """The 24-byte ``wasmtime_async_continuation_t`` a store's host calls use.

    Its finalizer is NULL (wasmtime calls it only when set): the store id
    needs no cleanup, and a Python finalizer would be one more callback per
    async host call."""
    cont: Any = c.CONTINUATION()
    cont.callback = _CONTINUATION
    cont.env = store_id
    return ctypes.string_at(ctypes.addressof(cont), _CONT_SIZE)


_Coroutine = types.CoroutineType
_get_data = c.raw_context_get_data
_ptr_at = ctypes.c_void_p.from_address
_CONT_SIZE = ctypes.sizeof(c.CONTINUATION)
#: the 24 bytes at an address, written by one copy (cheaper than a memmove call)
_cont_at = (ctypes.c_char * _CONT_SIZE).from_address
_SYNC = c.RawFuncCallback(_sync_trampoline)
_ASYNC = c.RawAsyncFuncCallback(_async_trampoline)
_CONTINUATION = c.ContinuationCallback(_continuation)
_NOOP_FINALIZER = c.Finalizer(_noop_finalizer)
_DESTRUCTOR = c.RawResourceDestructor(_destructor)
_ORPHAN_CONTINUATION = continuation_template(0)
