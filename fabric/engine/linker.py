"""Host interfaces (functions and resource types) and the linker that holds them.

A :class:`HostInterface` is built once and may be defined in any number of
linkers: its functions are registered with the process-wide callbacks of
``callbacks.py`` when they are created, not per linker.
"""

from __future__ import annotations

import ctypes
import inspect
from typing import TYPE_CHECKING, Any

from . import _capi as c
from .callbacks import (
    _ASYNC,
    _DESTRUCTOR,
    _NOOP_FINALIZER,
    _SYNC,
    HostFunc,
    HostImpl,
    new_resource_tag,
)
from .errors import EngineError, MissingImportsError
from .values import HostResource

if TYPE_CHECKING:
    from .engine import Component, Engine


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
                            c.raw_linker_instance_add_resource(
                                child, b, len(b), ty, _DESTRUCTOR, None, _NOOP_FINALIZER
                            )
                        )
                    finally:
                        c.resource_type_delete(ty)
                for fname, hf in iface.funcs.items():
                    b = fname.encode()
                    if hf.is_async:
                        err = c.raw_linker_instance_add_func_async(
                            child, b, len(b), _ASYNC, hf.env, _NOOP_FINALIZER
                        )
                    else:
                        err = c.raw_linker_instance_add_func(
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
