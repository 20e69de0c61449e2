"""Which worker this process is, and how a total is shared between workers (sans-IO).

``fabric run --workers N`` runs N worker processes, each with every workload
of the manifest (its own loop, virtual networks and services). A worker knows
its place as a ``WorkerSlot`` (``index`` in ``0..count-1``); a plain
``fabric run`` is the one slot ``WorkerSlot(0, 1)``.

Replicated services must not multiply what they hold outside the process
(database connections above all). A native service class may therefore
declare a ``for_worker`` hook::

    @classmethod
    def for_worker(cls, config: dict[str, Any], slot: WorkerSlot) -> dict[str, Any]: ...

returning the ``config`` table one worker's instance gets (dbpool splits every
pool's ``max_size`` and ``min_size`` with ``share``), or raising
``ValueError`` when the service cannot run as ``slot.count`` replicas (the
manifest check reports the message at the service's ``config``). fabric calls
it only when there are two workers or more, so one worker runs the manifest
exactly as written.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

__all__ = ["MAX_WORKERS", "WorkerSlot", "config_for_worker", "share"]

MAX_WORKERS = 64


class WorkerSlot(msgspec.Struct, frozen=True):
    """Worker ``index`` of ``count`` (``fabric run --workers count``)."""

    index: Annotated[int, msgspec.Meta(ge=0)] = 0
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_WORKERS)] = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker index {self.index} is not below the count {self.count}")

    @property
    def replicated(self) -> bool:
        """Whether other workers run the same services (two workers or more)."""
        return self.count > 1

    @classmethod
    def parse(cls, text: str) -> WorkerSlot:
        """``"1/2"`` → ``WorkerSlot(1, 2)`` (``ValueError`` if malformed)."""
        index, sep, count = text.partition("/")
        if not sep:
            raise ValueError(f"expected INDEX/COUNT like 0/2, got {text!r}")
        return cls(int(index), int(count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def share(total: int, slot: WorkerSlot) -> int:
    """Worker ``slot.index``'s part of ``total`` split over ``slot.count`` workers.

    Every worker gets ``total // count``; the first ``total % count`` workers
    get one more, so the parts add up to ``total`` exactly and differ by at
    most one. Splitting a minimum and a maximum this way keeps each worker's
    minimum at or below its maximum.
    """
    if total < 0:
        raise ValueError(f"cannot share a negative total ({total})")
    base, extra = divmod(total, slot.count)
    return base + (1 if slot.index < extra else 0)


def config_for_worker(cls: type, config: Mapping[str, Any], slot: WorkerSlot) -> dict[str, Any]:
    """The ``config`` table of a native service instance in worker ``slot``.

    A copy of ``config`` with one worker, or when the class has no
    ``for_worker`` hook; otherwise what the hook returns. The hook's
    ``ValueError`` propagates (the service cannot be replicated that way).
    """
    table = copy.deepcopy(dict(config))
    hook = getattr(cls, "for_worker", None)
    if hook is None or not slot.replicated:
        return table
    result = hook(table, slot)
    if not isinstance(result, Mapping):
        raise TypeError(f"{cls.__name__}.for_worker returned {type(result).__name__}, not a table")
    return dict(result)
