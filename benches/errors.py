"""Exceptions of the benchmark suite."""

from __future__ import annotations

__all__ = ["BenchError", "ContenderSkipped", "PgBouncerNotInstalled", "UnknownScenario"]


class BenchError(Exception):
    """Base class of the suite's errors."""


class ContenderSkipped(BenchError):
    """A contender cannot run here; the message is the reason shown in the report.

    Raised from a contender's ``setup()`` (or from a :class:`~benches.env.BenchEnv`
    resource it asks for); the harness records ``skipped: <reason>``.
    """


class PgBouncerNotInstalled(ContenderSkipped):
    """No ``pgbouncer`` binary on this machine."""

    def __init__(self, message: str = "pgbouncer not installed") -> None:
        super().__init__(message)


class UnknownScenario(BenchError):
    """A scenario name given on the command line does not exist."""
