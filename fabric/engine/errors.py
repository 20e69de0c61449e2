"""Exceptions raised by the engine bridge.

``EngineError`` is the root.  Errors a user can act on have their own class:
a component that cannot be loaded, imports that fabric does not provide, a
guest that trapped (with its wasm backtrace), a guest stopped at its deadline
or at its memory limit, and a guest that exited with a code.
"""

from __future__ import annotations

from fabric.errors import FabricError


class EngineError(FabricError):
    """Base class of every error of the engine bridge."""


class ConfigError(EngineError):
    """An engine configuration that wasmtime would reject (or abort on)."""


class ComponentLoadError(EngineError):
    """The file is missing, not a component, or fails to compile."""


class MissingImportsError(ComponentLoadError):
    """The component imports interfaces or functions that the host does not provide."""

    def __init__(self, path: str, missing: list[str]) -> None:
        self.path = path
        self.missing = missing
        shown = ", ".join(missing[:8]) + (
            f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""
        )
        super().__init__(f"{path}: imports that fabric does not provide: {shown}")


class ExportNotFound(EngineError):
    """The instance has no export of the requested name."""


class GuestTrap(EngineError):
    """The guest trapped (or a host function failed and took the guest down).

    ``backtrace`` holds the wasm frames, innermost first.
    """

    def __init__(self, message: str, backtrace: list[str] | None = None) -> None:
        self.message = message
        self.backtrace = backtrace or []
        text = message
        if self.backtrace:
            text += "\nwasm backtrace:\n" + "\n".join(
                f"  {i}: {frame}" for i, frame in enumerate(self.backtrace)
            )
        super().__init__(text)


class DeadlineExceeded(GuestTrap):
    """The guest ran past its deadline and was stopped."""


class MemoryLimitExceeded(GuestTrap):
    """The guest tried to grow its memory beyond its limit."""


class GuestExit(EngineError):
    """The guest called ``wasi:cli/exit``; ``code`` is its exit code."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"guest exited with code {code}")


class InstanceLimitReached(EngineError):
    """No instance slot is free: ``limit`` component instances are alive in this
    process (every workload's together), the engine's ``pool_instances``.

    Raised before anything is instantiated; the store that asked is left
    without an instance, and the instances alive go on.  ``detail`` holds
    wasmtime's message in the rare case the pool ran out of something else
    first (linear memories, tables of a component that has several)."""

    def __init__(self, limit: int, detail: str = "") -> None:
        self.limit = limit
        what = (
            f"the engine's instance pool ({limit} instances) is full: {detail}"
            if detail
            else f"{limit} component instances are alive in this process, "
            "the most the engine's instance pool holds"
        )
        super().__init__(
            f"instance limit reached: {what}; raise it with "
            "max_instances in the manifest or fabric run --max-instances N "
            "(EngineConfig.pool_instances from Python)"
        )


class InstanceDead(EngineError):
    """The instance failed earlier (trap, error, cancellation) and cannot be entered again."""


class TrapError(EngineError):
    """Raised by a host function to trap the guest (misuse the WIT forbids)."""
