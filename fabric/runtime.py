"""The runtime: an engine, a linker holding the WASI host, and guest runs.

``Runtime`` is what the CLI, the workload layer and the tests use to load a
component and run it: ``run_command`` for a ``wasi:cli/run`` component,
``instantiate`` + ``Instance.call`` for typed exports.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from .engine import (
    Component,
    ComponentLoadError,
    Engine,
    EngineConfig,
    GuestExit,
    Instance,
    Linker,
    Ok,
    Store,
)
from .wasi import WasiCtx, define_wasi


def run_export(component: Component) -> str:
    """The name of a component's ``wasi:cli/run`` function export."""
    for name, members in component.exports.items():
        if name.startswith("wasi:cli/run@") and "run" in members:
            return f"{name}#run"
    raise ComponentLoadError(
        f"{component.path}: does not export wasi:cli/run "
        "(fabric exec runs wasi:cli/command components)"
    )


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    """A run's deadline: cancel the task running it (`Runtime.run_command`)."""
    expired.append(True)
    task.cancel()


class Runtime:
    """One engine and one WASI linker shared by every guest of the process."""

    def __init__(self, config: EngineConfig | None = None, *, engine: Engine | None = None) -> None:
        self.engine = engine or Engine(config)
        try:
            self.linker = self.new_linker()
        except BaseException:
            self.engine.close()
            raise
        self.guests_run = 0

    def new_linker(self) -> Linker:
        """A linker with the WASI host defined (add workload-specific interfaces to it)."""
        linker = Linker(self.engine)
        define_wasi(linker)
        return linker

    def load(self, path: str | os.PathLike[str], *, linker: Linker | None = None) -> Component:
        """Load (from the compile cache when possible) and check the imports."""
        component = self.engine.load(path)
        (linker or self.linker).check(component)
        return component

    async def instantiate(
        self,
        component: Component,
        ctx: WasiCtx,
        *,
        max_memory: int | None = None,
        timeout: float | None = None,
        linker: Linker | None = None,
    ) -> Instance:
        store = Store(self.engine, ctx, max_memory=max_memory)
        try:
            return await store.instantiate(linker or self.linker, component, timeout=timeout)
        except BaseException:
            store.close()
            raise

    async def run_command(
        self,
        component: Component,
        ctx: WasiCtx,
        *,
        timeout: float | None = None,
        max_memory: int | None = None,
        linker: Linker | None = None,
        export: str | None = None,
    ) -> int:
        """Run ``wasi:cli/run`` and return the exit code (traps raise ``GuestTrap``).
        ``export`` is the component's `run_export`, when the caller knows it."""
        if export is None:
            export = run_export(component)
        deadline = None if timeout is None else time.monotonic() + timeout
        self.guests_run += 1
        store = Store(self.engine, ctx, max_memory=max_memory)
        try:
            if deadline is None:
                return await self._run_export(store, component, export, linker)
            # One deadline for instantiate and the call, not one each: a timer
            # that cancels this task (what asyncio.timeout_at does, without
            # its scope object and frames on every invocation).
            store.hold_deadline(deadline)
            task = asyncio.current_task()
            assert task is not None
            cancelling = task.cancelling()
            expired: list[bool] = []
            timer = asyncio.get_running_loop().call_at(deadline, _expire, task, expired)
            try:
                code = await self._run_export(store, component, export, linker)
            except BaseException as e:
                if expired and task.uncancel() <= cancelling:
                    if isinstance(e, asyncio.CancelledError):
                        raise store.deadline_exceeded() from None
                raise
            finally:
                timer.cancel()
            if expired:
                task.uncancel()
            return code
        finally:
            store.close()

    async def _run_export(
        self, store: Store, component: Component, export: str, linker: Linker | None
    ) -> int:
        try:
            inst = await store.instantiate(linker or self.linker, component)
            result: Any = await inst.call(export)
            return 0 if isinstance(result, Ok) else 1
        except GuestExit as e:
            return e.code

    def statistics(self) -> dict[str, int]:
        """The engine's counts (compile cache, ``instances`` alive of
        ``instance_limit``, 0 for no bound) and the commands run."""
        return dict(self.engine.statistics(), guests_run=self.guests_run)

    def close(self) -> None:
        self.engine.close()

    def __repr__(self) -> str:
        return f"<Runtime {self.engine!r} {self.linker!r} guests_run={self.guests_run}>"
