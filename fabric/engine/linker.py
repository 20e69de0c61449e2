"""Host functions and resources, and the C callbacks that run them.

Every host function is registered with one of two module-level ctypes
callbacks (sync or async) and told apart by an integer ``env`` id, so no
closure has to outlive anything (ENGINE-FACTS P8).  The callbacks run on the
guest's fiber stack: they copy the arguments out, call the Python
implementation (a plain function, or for async functions create the
coroutine and park it on the store), and return.  The coroutine itself runs
on the main stack, in the task that drives the store (see ``store.py``).

Host functions receive the store's ``data`` object first, then the lifted
arguments.  To return the error case of a WIT ``result`` they raise
:class:`~fabric.engine.values.Err`.  Any other exception traps the guest and
is re-raised, unchanged, by the call that was running.
"""

from __future__ import annotations

import ctypes
import inspect
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _capi as c
from .errors import EngineError, MissingImportsError
from .values import Err, HostResource, Signature

if TYPE_CHECKING:
    from .engine import Component, Engine
    from .store import Store

HostImpl = Callable[..., Any]

#: env id -> host function (index 0 unused: ctypes reads a NULL void* as None)
_FUNCS: list[HostFunc | None] = [None]
#: store id -> live store
STORES: dict[int, Store] = {}
_tags = itertools.count(1)


class HostFunc:
    __slots__ = ("env", "impl", "interface", "is_async", "name", "sig")

    def __init__(self, interface: str, name: str, impl: HostImpl, is_async: bool) -> None:
        self.interface = interface
        self.name = name
        self.impl = impl
        self.is_async = is_async
        self.sig: Signature | None = None
        self.env = len(_FUNCS)
        _FUNCS.append(self)

    def signature(self, fty: Any) -> Signature:
        sig = self.sig
        if sig is None:
            sig = self.sig = Signature.from_func_type(fty)
        return sig

    @property
    def qualname(self) -> str:
        return f"{self.interface}#{self.name}"


def new_resource_tag() -> int:
    """A fresh tag for a host resource type (one per Python resource class)."""
    return next(_tags)


# --- the C callbacks ----------------------------------------------------------
def _sync_trampoline(
    env: int, ctx: Any, fty: Any, args: Any, nargs: int, results: Any, nresults: int
) -> int:
    store: Store | None = None
    hf = _FUNCS[env]
    try:
        assert hf is not None
        store = STORES[c.context_get_data(ctx)]
        sig = hf.sig or hf.signature(fty)
        store.cb_ctx = ctx
        pyargs = [codec.lift(args[i], store) for i, codec in enumerate(sig.params)]
        try:
            value = hf.impl(store.data, *pyargs)
        except Err as e:
            value = e
        if sig.result is not None:
            sig.result.lower(value, results[0], store)
        return 0
    except BaseException as e:
        return _fail(store, hf, e)
    finally:
        if store is not None:
            store.cb_ctx = None


def _async_trampoline(
    env: int,
    ctx: Any,
    fty: Any,
    args: Any,
    nargs: int,
    results: Any,
    nresults: int,
    err_ret: Any,
    cont_ret: Any,
) -> None:
    # The continuation must be set before anything can fail (ENGINE-FACTS P2):
    # one copy of a prebuilt template (callback, env = store id, finalizer).
    sid = _get_data(ctx)
    store = STORES.get(sid)
    if store is None:
        _memmove(cont_ret, _ORPHAN_CONTINUATION, _CONT_SIZE)
        err_ret[0] = ctypes.cast(_fail(None, _FUNCS[env], LookupError("unknown store")), c.ERROR_P)
        return
    _memmove(cont_ret, store.continuation, _CONT_SIZE)
    hf = _FUNCS[env]
    try:
        assert hf is not None
        sig = hf.sig or hf.signature(fty)
        store.cb_ctx = ctx
        params = sig.params
        pyargs = [codec.lift(args[i], store) for i, codec in enumerate(params)] if params else ()
        store._parked = hf.impl(store.data, *pyargs)
        store._pending = (sig, results, hf)
        store._outcome = None
        store.host_calls += 1
    except BaseException as e:
        err_ret[0] = ctypes.cast(_fail(store, hf, e), c.ERROR_P)
    finally:
        store.cb_ctx = None


def _continuation(env: int) -> bool:
    store = STORES.get(env)
    if store is None:
        return True
    return store.resume()


def _noop_finalizer(env: int) -> None:
    return None


def _destructor(env: int, ctx: Any, rep: int) -> int:
    store: Store | None = None
    try:
        store = STORES[c.context_get_data(ctx)]
        obj = store.table_pop(rep)
        if obj is not None:
            obj.drop()
        return 0
    except BaseException as e:
        return _fail(store, None, e)


def _fail(store: Store | None, hf: HostFunc | None, exc: BaseException) -> int:
    """Record why the guest is being stopped and hand wasmtime an error."""
    where = hf.qualname if hf is not None else "resource destructor"
    if store is not None:
        store.record_host_failure(exc, where)
    text = f"host function {where} failed: {type(exc).__name__}: {exc}"
    return int(c.error_new_addr(text.encode("utf-8", "replace")) or 0)


def continuation_template(store_id: int) -> ctypes.Array[ctypes.c_char]:
    """The 24-byte ``wasmtime_async_continuation_t`` a store's host calls use."""
    cont: Any = c.CONTINUATION()
    cont.callback = _CONTINUATION
    cont.env = store_id
    cont.finalizer = _NOOP_FINALIZER
    return ctypes.create_string_buffer(ctypes.string_at(ctypes.addressof(cont), _CONT_SIZE))


_get_data = c.context_get_data
_memmove = ctypes.memmove
_CONT_SIZE = ctypes.sizeof(c.CONTINUATION)
_SYNC = c.FuncCallback(_sync_trampoline)
_ASYNC = c.AsyncFuncCallback(_async_trampoline)
_CONTINUATION = c.ContinuationCallback(_continuation)
_NOOP_FINALIZER = c.Finalizer(_noop_finalizer)
_DESTRUCTOR = c.ResourceDestructor(_destructor)
_ORPHAN_CONTINUATION = continuation_template(0)


# --- definitions ---------------------------------------------------------------
class HostInterface:
    """The functions and resource types of one imported interface.

    ``name`` is the full versioned name (``wasi:io/streams@0.2.9``); wasmtime
    matches it to imports of any compatible 0.2.x version.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.funcs: dict[str, HostFunc] = {}
        self.resources: dict[str, int] = {}

    def func(self, name: str, impl: HostImpl, *, is_async: bool | None = None) -> None:
        if is_async is None:
            is_async = inspect.iscoroutinefunction(impl)
        self.funcs[name] = HostFunc(self.name, name, impl, is_async)

    def resource(self, name: str, cls: type[HostResource]) -> None:
        if not cls.__dict__.get("resource_tag"):
            cls.resource_tag = new_resource_tag()
        self.resources[name] = cls.resource_tag

    @property
    def base(self) -> str:
        return self.name.split("@", 1)[0]

    def __repr__(self) -> str:
        return (
            f"<HostInterface {self.name} funcs={len(self.funcs)} resources={len(self.resources)}>"
        )


def _compatible(import_name: str, provided: str) -> bool:
    """Do two versioned interface names match under wasmtime's semver rule?"""
    a_base, _, a_ver = import_name.partition("@")
    b_base, _, b_ver = provided.partition("@")
    if a_base != b_base:
        return False
    if not a_ver or not b_ver:
        return a_ver == b_ver
    a, b = a_ver.split("."), b_ver.split(".")
    if a[0] != b[0]:
        return False
    if a[0] == "0":
        return a[:2] == b[:2]
    return True


class Linker:
    """A component linker holding host interfaces."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._ptr = c.linker_new(engine.ptr())
        self.interfaces: dict[str, HostInterface] = {}

    def ptr(self) -> Any:
        return self._ptr

    def define(self, iface: HostInterface) -> None:
        if iface.name in self.interfaces:
            raise EngineError(f"interface {iface.name} is already defined")
        root = c.linker_root(self._ptr)
        try:
            child = c.LINKER_INSTANCE_P()
            raw = iface.name.encode()
            self._check(c.linker_instance_add_instance(root, raw, len(raw), ctypes.byref(child)))
            try:
                for rname, tag in iface.resources.items():
                    ty = c.resource_type_new_host(tag)
                    try:
                        b = rname.encode()
                        self._check(
                            c.linker_instance_add_resource(
                                child, b, len(b), ty, _DESTRUCTOR, None, _NOOP_FINALIZER
                            )
                        )
                    finally:
                        c.resource_type_delete(ty)
                for fname, hf in iface.funcs.items():
                    b = fname.encode()
                    if hf.is_async:
                        err = c.linker_instance_add_func_async(
                            child, b, len(b), _ASYNC, hf.env, _NOOP_FINALIZER
                        )
                    else:
                        err = c.linker_instance_add_func(
                            child, b, len(b), _SYNC, hf.env, _NOOP_FINALIZER
                        )
                    self._check(err)
            finally:
                c.linker_instance_delete(child)
        finally:
            c.linker_instance_delete(root)
        self.interfaces[iface.name] = iface

    @staticmethod
    def _check(err: Any) -> None:
        if err:
            msg, _ = c.take_error(err)
            raise EngineError(msg)

    def provides(self, import_name: str) -> HostInterface | None:
        for name, iface in self.interfaces.items():
            if _compatible(import_name, name):
                return iface
        return None

    def missing_imports(self, component: Component) -> list[str]:
        """Imports of ``component`` this linker cannot satisfy, by name."""
        missing: list[str] = []
        for name, members in component.imports.items():
            iface = self.provides(name)
            if iface is None:
                missing.append(name)
                continue
            known = set(iface.funcs) | set(iface.resources)
            missing.extend(f"{name}#{m}" for m in members if m not in known)
        return missing

    def check(self, component: Component) -> None:
        missing = self.missing_imports(component)
        if missing:
            raise MissingImportsError(component.path, missing)

    def __repr__(self) -> str:
        funcs = sum(len(i.funcs) for i in self.interfaces.values())
        return f"<Linker interfaces={len(self.interfaces)} funcs={funcs}>"
