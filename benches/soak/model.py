"""The reliability suite's data: profiles and results (msgspec Structs, written as JSON)."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "FULL",
    "PROFILES",
    "QUICK",
    "FaultResult",
    "Outcome",
    "RowCheck",
    "SoakProfile",
    "SoakReport",
]

SCHEMA_VERSION = 1

#: ``held``: nothing acknowledged lost or duplicated, no lease leaked, host alive and
#: recovered; ``failed``: one of those did not hold; ``error``: the harness itself failed.
Outcome = Literal["held", "failed", "error"]


class SoakProfile(msgspec.Struct, frozen=True, kw_only=True):
    """How long and how hard each fault is driven.

    For every fault, ``workers`` concurrent invocations run for ``warmup``
    seconds, the fault is injected, and the load goes on for ``after``
    seconds once the injection is over. Then the load stops and the pools get
    up to ``settle`` seconds to return every lease.
    """

    name: str
    workers: int
    warmup: float
    after: float
    settle: float
    #: database restarts / backend-kill rounds
    repeats: int
    #: clients that begin, write and vanish
    dropped_clients: int
    #: idle clients that complete the hello through the ingress port
    flood_clients: int
    #: how long the flood is held open
    flood_hold: float
    #: the huge result: rows of ``huge_row_bytes`` bytes each
    huge_rows: int
    huge_row_bytes: int
    #: the stalled reader: pipelined queries of ``stall_reply_bytes`` each, never read
    stall_requests: int
    stall_reply_bytes: int
    #: how long the crash-looping service is left to loop
    crash_loop_for: float
    #: invocations in flight through the control socket when SIGTERM arrives
    sigterm_inflight: int


QUICK = SoakProfile(
    name="quick",
    workers=4,
    warmup=1.0,
    after=1.5,
    settle=10.0,
    repeats=1,
    dropped_clients=10,
    flood_clients=560,
    flood_hold=2.0,
    huge_rows=250_000,
    huge_row_bytes=1_000,
    stall_requests=40,
    stall_reply_bytes=8_000_000,
    crash_loop_for=2.0,
    sigterm_inflight=8,
)

FULL = SoakProfile(
    name="full",
    workers=16,
    warmup=3.0,
    after=5.0,
    settle=20.0,
    repeats=3,
    dropped_clients=100,
    flood_clients=800,
    flood_hold=5.0,
    huge_rows=600_000,
    huge_row_bytes=1_000,
    stall_requests=64,
    stall_reply_bytes=32_000_000,
    crash_loop_for=6.0,
    sigterm_inflight=40,
)

PROFILES: dict[str, SoakProfile] = {p.name: p for p in (QUICK, FULL)}


class RowCheck(msgspec.Struct, frozen=True, kw_only=True):
    """Acknowledged invocations compared with the rows present, for one database."""

    database: str
    acknowledged: int
    present: int
    #: acknowledged, but no row
    lost: int
    #: keys present more than once
    duplicated: int
    #: rows whose invocation was not acknowledged (failed or cut off after the commit):
    #: allowed, a client cannot tell a lost reply from a lost commit
    unacknowledged_present: int = 0
    #: rows that must not exist (written inside a transaction that never committed)
    phantom: int = 0


class FaultResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one fault did to the fabric, and whether the fabric held."""

    name: str
    title: str
    outcome: Outcome
    #: why the outcome is not ``held``, one reason per entry
    problems: list[str] = msgspec.field(default_factory=list)
    invocations: int = 0
    acknowledged: int = 0
    failed: int = 0
    first_error: str | None = None
    rows: list[RowCheck] = msgspec.field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    #: pool leases still in use, and transactions still open, after the fault settled
    leases_leaked: int | None = None
    transactions_open: int | None = None
    rss_before_mb: float | None = None
    rss_peak_mb: float | None = None
    rss_final_mb: float | None = None
    #: seconds from the end of the injection to the first successful invocation
    #: started after it (None: none succeeded)
    recovery_seconds: float | None = None
    host_alive: bool = True
    duration_seconds: float = 0.0
    #: fault-specific figures (what the fault saw: refusals, restarts, exit status...)
    details: dict[str, int | float | str | bool | None] = msgspec.field(default_factory=dict)


class SoakReport(msgspec.Struct, frozen=True, kw_only=True):
    schema_version: int = SCHEMA_VERSION
    started_at: str
    finished_at: str
    duration_seconds: float
    profile: SoakProfile
    machine: dict[str, str]
    faults: list[FaultResult]
    notes: list[str] = msgspec.field(default_factory=list)

    def fault(self, name: str) -> FaultResult | None:
        for result in self.faults:
            if result.name == name:
                return result
        return None
