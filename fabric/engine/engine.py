"""The wasmtime engine, its epoch ticker, and the compiled-component cache.

One ``Engine`` per process is the normal case.  Its configuration is checked
in Python before wasmtime sees it (some bad combinations abort the process
instead of raising), and it carries a fingerprint that keys the on-disk cache
of compiled components: a second run of the same guest deserializes the
compiled code (milliseconds) instead of compiling it (seconds).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import mmap
import os
import threading
import weakref
from collections.abc import Callable
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

import msgspec
import wasmtime
from wasmtime import _bindings as _wb
from wasmtime import component as wc

from . import _capi as c
from .errors import ComponentLoadError, ConfigError, InstanceLimitReached
from .values import Signature

WASMTIME_VERSION = _dist_version("wasmtime")


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Engine settings.  Stack sizes in bytes, the epoch tick in seconds."""

    max_wasm_stack: int = 1 << 20
    async_stack_size: int = 2 << 20
    epoch_tick: float = 0.002
    opt_level: str = "speed"
    cache_dir: str | None = None
    #: wasmtime's pooling allocator: linear memories, tables and fiber stacks
    #: come from slots reserved once and reused, instead of an mmap and a munmap
    #: (with its TLB shootdown) for each of them on every fresh instance.
    #: ``pool_instances`` bounds the component instances (and the linear
    #: memories, fiber stacks) alive at once; the engine counts them and
    #: refuses one more with ``InstanceLimitReached`` before wasmtime is asked.
    #: The pool is address space reserved when the engine starts, ~4 GiB per
    #: memory slot (8 TiB for 2,000).  Off: on-demand allocation, no cap.
    pooling: bool = True
    pool_instances: int = 2_000

    def validate(self) -> None:
        # wasmtime aborts the process (not an exception) when the wasm stack
        # limit exceeds the fiber stack, and host code running on the fiber
        # needs headroom of its own.
        if self.max_wasm_stack <= 0 or self.async_stack_size <= 0:
            raise ConfigError("stack sizes must be positive")
        if self.async_stack_size - self.max_wasm_stack < 256 * 1024:
            raise ConfigError(
                "async_stack_size must exceed max_wasm_stack by at least 256 KiB "
                f"(got {self.async_stack_size} and {self.max_wasm_stack})"
            )
        if self.pool_instances < 1:
            raise ConfigError("pool_instances must be positive")
        if not 0.0001 <= self.epoch_tick <= 1.0:
            raise ConfigError("epoch_tick must be between 0.1 ms and 1 s")
        if self.opt_level not in ("none", "speed", "speed_and_size"):
            raise ConfigError(f"unknown opt_level {self.opt_level!r}")

    def fingerprint(self) -> str:
        """What compiled code depends on (stack sizes do not matter)."""
        return f"wasmtime={WASMTIME_VERSION};epoch=1;concurrency=0;opt={self.opt_level}"


def default_cache_dir() -> Path:
    base = os.environ.get("FABRIC_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fabric"


def _delete_export_indexes(cache: dict[str, tuple[Any, Signature]]) -> None:
    for idx, _ in cache.values():
        c.export_index_delete(idx)
    cache.clear()


class Component:
    """A compiled component, ready to instantiate any number of times."""

    def __init__(self, engine: Engine, inner: wc.Component, path: str, digest: str) -> None:
        self.engine = engine
        self.inner = inner
        self.path = path
        self.digest = digest
        self._imports: dict[str, list[str]] | None = None
        self._exports: dict[str, list[str]] | None = None
        #: export name -> (export index, signature), shared by every instance
        self.export_funcs: dict[str, tuple[Any, Signature]] = {}
        weakref.finalize(self, _delete_export_indexes, self.export_funcs)

    def ptr(self) -> Any:
        return self.inner.ptr()

    def _walk(self, items: dict[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, ext in items.items():
            ty = ext.ty
            if isinstance(ty, wc.ComponentInstanceType):
                members = ty.exports(self.engine.inner)
                out[name] = sorted(k for k, v in members.items() if isinstance(v.ty, wc.FuncType))
            else:
                out[name] = []
        return out

    @property
    def imports(self) -> dict[str, list[str]]:
        """Imported names, each with the functions its instance holds (empty for a function)."""
        if self._imports is None:
            self._imports = self._walk(self.inner.type.imports(self.engine.inner))
        return self._imports

    @property
    def exports(self) -> dict[str, list[str]]:
        """Exported names, each with the functions of an exported instance."""
        if self._exports is None:
            self._exports = self._walk(self.inner.type.exports(self.engine.inner))
        return self._exports

    def __repr__(self) -> str:
        return f"<Component {self.path} {self.digest[:12]}>"


class Engine:
    """A wasmtime engine with epoch interruption and a compiled-component cache."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.config.validate()
        cfg = wasmtime.Config()
        cfg.epoch_interruption = True
        cfg.max_wasm_stack = self.config.max_wasm_stack
        cfg.cranelift_opt_level = self.config.opt_level
        c.lib.wasmtime_config_async_stack_size_set(cfg.ptr(), self.config.async_stack_size)
        # With component-model concurrency on (wasmtime 50's default), a host
        # function taking two borrowed handles (descriptor.rename-at,
        # tcp-socket.start-bind, ...) traps inside wasmtime with "deferred host
        # scope has no call context".  fabric's host functions do not need it.
        c.lib.wasmtime_config_concurrency_support_set(cfg.ptr(), False)
        self.pooling = self.config.pooling and _set_pooling(cfg, self.config.pool_instances)
        #: component instances alive at once at most (None: no bound, on-demand allocation)
        self.instance_limit: int | None = self.config.pool_instances if self.pooling else None
        #: stores holding an instance slot (from instantiate until close)
        self.instances = 0
        self._refused = 0
        self.inner = wasmtime.Engine(cfg)
        self._ptr = self.inner.ptr()
        self.cache_dir = (
            Path(self.config.cache_dir) if self.config.cache_dir else default_cache_dir()
        ) / "compiled"
        self._components: dict[str, Component] = {}
        self._stats = {"compiled": 0, "cache_hits": 0, "memory_hits": 0}
        self._ticker = _EpochTicker(self.inner, self.config.epoch_tick)
        self._ticker.start()

    def ptr(self) -> Any:
        return self._ptr

    def close(self) -> None:
        self._ticker.stop()

    # -- instance slots ------------------------------------------------------------
    def take_instance_slot(self) -> None:
        """Count one more live instance, or raise ``InstanceLimitReached`` when
        ``instance_limit`` are alive (the pool would fail the instantiation)."""
        limit = self.instance_limit
        if limit is not None and self.instances >= limit:
            self._refused += 1
            raise InstanceLimitReached(limit)
        self.instances += 1

    def give_instance_slots(self, count: int) -> None:
        """A store holding ``count`` slots was closed."""
        self.instances -= count

    def statistics(self) -> dict[str, int]:
        """Compile-cache counts and instance slots: ``instances`` alive,
        ``instance_limit`` (0: no bound) and ``instances_refused`` at the limit."""
        return dict(
            self._stats,
            loaded=len(self._components),
            instances=self.instances,
            instance_limit=self.instance_limit or 0,
            instances_refused=self._refused,
        )

    def __repr__(self) -> str:
        s = self._stats
        limit = "" if self.instance_limit is None else f"/{self.instance_limit}"
        return (
            f"<Engine wasmtime {WASMTIME_VERSION} components={len(self._components)} "
            f"compiled={s['compiled']} cache_hits={s['cache_hits']} "
            f"instances={self.instances}{limit}>"
        )

    # -- loading -------------------------------------------------------------
    def load(self, path: str | os.PathLike[str]) -> Component:
        """Load a component file, compiling it only when the cache has no copy."""
        p = Path(path)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise ComponentLoadError(f"{p}: no such file") from None
        if not p.is_file():
            raise ComponentLoadError(f"{p}: not a file")
        return self._cached(self._digest(p, st), str(p), p.read_bytes)

    def _cached(self, digest: str, name: str, read: Callable[[], bytes]) -> Component:
        """The component for ``digest``: from memory, the disk cache, or compiled."""
        hit = self._components.get(digest)
        if hit is not None:
            self._stats["memory_hits"] += 1
            return hit
        compiled = self.cache_dir / f"{digest}.cwasm"
        inner: wc.Component | None = None
        if compiled.exists():
            try:
                inner = wc.Component.deserialize_file(self.inner, str(compiled))
                self._stats["cache_hits"] += 1
            except wasmtime.WasmtimeError:
                inner = None  # stale or truncated entry: compile again
        if inner is None:
            inner = self._compile_bytes(read(), name)
            self._store_compiled(inner, compiled)
        comp = Component(self, inner, name, digest)
        self._components[digest] = comp
        return comp

    def _compile_bytes(self, data: bytes, name: str) -> wc.Component:
        if data[:4] != b"\0asm":
            raise ComponentLoadError(f"{name}: not a WebAssembly binary")
        if data[4:8] == b"\x01\x00\x00\x00":
            raise ComponentLoadError(
                f"{name}: a core WebAssembly module, not a component "
                "(fabric runs WASI 0.2 components)"
            )
        try:
            inner = wc.Component(self.inner, data)
        except wasmtime.WasmtimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid component"
            raise ComponentLoadError(f"{name}: cannot compile component: {first}") from None
        self._stats["compiled"] += 1
        return inner

    def _store_compiled(self, inner: wc.Component, target: Path) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
            tmp.write_bytes(inner.serialize())
            os.replace(tmp, target)
        except OSError:
            pass  # a read-only cache only costs the next run a compile

    def _digest(self, p: Path, st: os.stat_result) -> str:
        """Content hash + engine fingerprint, memoized by file identity."""
        ident = f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        index = self.cache_dir / "index" / (hashlib.sha1(ident.encode()).hexdigest() + ".json")
        try:
            rec = json.loads(index.read_text())
            if rec.get("ident") == ident and rec.get("fp") == self.config.fingerprint():
                return str(rec["digest"])
        except (OSError, ValueError, KeyError):
            pass
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(self.config.fingerprint().encode())
        digest = h.hexdigest()
        try:
            index.parent.mkdir(parents=True, exist_ok=True)
            tmp = index.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(
                json.dumps({"ident": ident, "fp": self.config.fingerprint(), "digest": digest})
            )
            os.replace(tmp, index)
        except OSError:
            pass
        return digest


#: Per-module limits of the pooling allocator, raised above wasmtime's defaults
#: (1 memory and 1 table per core module, 20,000 table elements, 1 MiB of
#: instance metadata) so that real components are not refused for their shape.
_POOL_MEMORIES_PER_MODULE = 16
_POOL_TABLES_PER_MODULE = 16
_POOL_TABLE_ELEMENTS = 1 << 18
_POOL_INSTANCE_SIZE = 16 << 20
#: Slots per component instance, so that ``pool_instances`` instances fit
#: before any other pool runs out: a memory reserves ~4 GiB of address space,
#: a table _POOL_TABLE_ELEMENTS pointers (2 MiB), a core instance only counts.
#: A componentize-py guest takes 1 memory, 2 tables and 14 core instances.
_POOL_MEMORIES_PER_INSTANCE = 1
_POOL_TABLES_PER_INSTANCE = 4
_POOL_CORE_INSTANCES_PER_INSTANCE = 32


#: Address space of one linear-memory slot of the pool, with room to spare:
#: the 4 GiB reservation and its guard region (32 MiB by default).
_POOL_MEMORY_SLOT = (4 << 30) + (128 << 20)


def _can_reserve(size: int) -> bool:
    """Whether ``size`` bytes of address space can be reserved now (an
    inaccessible mapping, made and dropped at once)."""
    try:
        mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=0)
    except (OSError, ValueError, OverflowError):
        return False
    mapping.close()
    return True


def _set_pooling(cfg: wasmtime.Config, instances: int) -> bool:
    """Switch ``cfg`` to the pooling allocator with room for ``instances``
    instances alive at once.  False (on-demand allocation stays) when the
    pool's address space cannot be reserved (``ulimit -v``, a 39-bit address
    space, valgrind): wasmtime would abort the process, where on-demand
    reserves only what the live instances use."""
    if not _can_reserve(instances * _POOL_MEMORY_SLOT):
        return False
    pc = _wb.wasmtime_pooling_allocation_config_new()
    try:
        for name, count in (
            ("total_component_instances", instances),
            ("total_stacks", instances),
            ("total_memories", _POOL_MEMORIES_PER_INSTANCE * instances),
            ("total_tables", _POOL_TABLES_PER_INSTANCE * instances),
            ("total_core_instances", _POOL_CORE_INSTANCES_PER_INSTANCE * instances),
        ):
            getattr(_wb, f"wasmtime_pooling_allocation_config_{name}_set")(pc, count)
        _wb.wasmtime_pooling_allocation_config_max_memories_per_module_set(
            pc, _POOL_MEMORIES_PER_MODULE
        )
        _wb.wasmtime_pooling_allocation_config_max_tables_per_module_set(
            pc, _POOL_TABLES_PER_MODULE
        )
        _wb.wasmtime_pooling_allocation_config_table_elements_set(pc, _POOL_TABLE_ELEMENTS)
        _wb.wasmtime_pooling_allocation_config_max_core_instance_size_set(pc, _POOL_INSTANCE_SIZE)
        _wb.wasmtime_pooling_allocation_config_max_component_instance_size_set(
            pc, _POOL_INSTANCE_SIZE
        )
        _wb.wasmtime_pooling_allocation_strategy_set(cfg.ptr(), pc)
        return True
    finally:
        _wb.wasmtime_pooling_allocation_config_delete(pc)


class _EpochTicker:
    """Advances the engine's epoch from a thread.

    The event loop cannot tick while a guest runs inside ``poll`` (the call
    holds the loop's thread), but ``poll`` releases the GIL, so a thread can.
    Each tick lets a running guest yield (fairness) and check its deadline.
    """

    def __init__(self, engine: wasmtime.Engine, interval: float) -> None:
        # The ticker owns a reference to the engine: the engine cannot be
        # freed while the thread may still tick it.
        self._engine = engine
        self._engine_ptr = engine.ptr()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fabric-epoch", daemon=True)
        self.ticks = 0

    def start(self) -> None:
        _TICKERS.add(self)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        _TICKERS.discard(self)

    def _run(self) -> None:
        increment = c.engine_increment_epoch
        ptr = self._engine_ptr
        wait = self._stop.wait
        interval = self._interval
        while not wait(interval):
            increment(ptr)
            self.ticks += 1


_TICKERS: set[_EpochTicker] = set()


@atexit.register
def _stop_tickers() -> None:
    for ticker in list(_TICKERS):
        ticker.stop()
