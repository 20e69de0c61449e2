"""Readiness, decided from a status report (what ``/readyz`` answers).

A fabric is ready when every workload has started (``started_at`` is set
once the last one has), it is not draining, and every service of every
workload is ``ready``.  ``not_ready(report)`` lists the reasons it is not,
one line each, in workload and service order; an empty list means ready.
Liveness (``/healthz``) needs no report: the loop answering is the answer.
"""

from __future__ import annotations

from .status import StatusReport

__all__ = ["not_ready"]

_MAX_ERROR = 200  # characters of a service's last error quoted in a reason


def not_ready(report: StatusReport) -> list[str]:
    """Why ``report``'s fabric is not ready (empty: ready)."""
    if report.draining:
        return ["draining: the fabric is shutting down"]
    if not report.started_at:
        return ["starting: the workloads are still loading or starting"]
    reasons = []
    if report.workers and not any(w.state == "ready" for w in report.workers):
        # fabric run --workers: a worker being restarted leaves the others serving
        states = ", ".join(f"worker {w.index} is {w.state}" for w in report.workers)
        reasons.append(f"no worker is ready ({states})")
    for workload in report.workloads:
        for service in workload.services:
            if service.state == "ready":
                continue
            reason = f"workload {workload.name}: service {service.name} is {service.state}"
            detail = service.failure_reason or service.last_error
            if detail:
                reason += f" ({_one_line(detail)})"
            reasons.append(reason)
    return reasons


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_ERROR else line[: _MAX_ERROR - 3] + "..."
