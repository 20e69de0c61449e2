"""The engine bridge: wasmtime's async component C API, driven from asyncio.

This package is the only part of fabric that touches ctypes.
"""

from .engine import WASMTIME_VERSION, Component, Engine, EngineConfig, default_cache_dir
from .errors import (
    ComponentLoadError,
    ConfigError,
    DeadlineExceeded,
    EngineError,
    ExportNotFound,
    GuestExit,
    GuestTrap,
    InstanceDead,
    InstanceLimitReached,
    MemoryLimitExceeded,
    MissingImportsError,
    TrapError,
)
from .linker import HostInterface, Linker
from .store import Func, Instance, Store
from .values import Err, HostResource, Ok

__all__ = [
    "WASMTIME_VERSION",
    "Component",
    "ComponentLoadError",
    "ConfigError",
    "DeadlineExceeded",
    "Engine",
    "EngineConfig",
    "EngineError",
    "Err",
    "ExportNotFound",
    "Func",
    "GuestExit",
    "GuestTrap",
    "HostInterface",
    "HostResource",
    "Instance",
    "InstanceDead",
    "InstanceLimitReached",
    "Linker",
    "MemoryLimitExceeded",
    "MissingImportsError",
    "Ok",
    "Store",
    "TrapError",
    "default_cache_dir",
]
