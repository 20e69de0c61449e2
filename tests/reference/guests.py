"""The test guests of ``tests/guests``, built with :mod:`fabric.build` (cached).

Each function builds at most once per process and returns the path of the
component in fabric's cache; a cold build takes 10-14 s, a cache hit one hash
of the sources.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fabric.build import build_python_guest, stage_packages

GUESTS_DIR = Path(__file__).resolve().parent.parent / "guests"

__all__ = [
    "GUESTS_DIR",
    "cli_guest",
    "dbbench_guest",
    "guest_path",
    "job_guest",
    "net_guest",
    "pipeline_guest",
    "service_guest",
    "values_guest",
]


@functools.cache
def cli_guest() -> Path:
    """World ``command``: args, env, exit, streams, clocks, random, fs-*, trap, loop, sleep..."""
    return build_python_guest(GUESTS_DIR / "cli")


@functools.cache
def net_guest() -> Path:
    """World ``command``: socket conformance modes, echo/bulk/udp peers, asyncio, PyMySQL."""
    return build_python_guest(GUESTS_DIR / "net", extra_paths=[stage_packages(["pymysql"])])


@functools.cache
def job_guest() -> Path:
    """World ``job-component``: exports ``fabric:guests/job``."""
    return build_python_guest(GUESTS_DIR / "cron", world="job-component", app="job")


@functools.cache
def service_guest() -> Path:
    """World ``cron-service``: a command importing ``fabric:guests/job``."""
    return build_python_guest(GUESTS_DIR / "cron", world="cron-service", app="service")


@functools.cache
def pipeline_guest() -> Path:
    """World ``composer``: exports ``pipeline``, imports ``job``."""
    return build_python_guest(GUESTS_DIR / "compose", world="composer", app="pipeline")


@functools.cache
def dbbench_guest() -> Path:
    """World ``command``: pooled / pg-direct / mysql-direct round trips, transactions."""
    from fabric.guests import dbbench

    return dbbench()


@functools.cache
def values_guest() -> Path:
    """World ``values``: every component value kind both ways, host resources."""
    return build_python_guest(
        GUESTS_DIR / "values", world="values", wit_dir=GUESTS_DIR / "values" / "wit"
    )


def guest_path(name: str) -> Path:
    """The built guest called ``name`` in :class:`reference.cases.Case` (``cli``, ``net``...)."""
    builders = {
        "cli": cli_guest,
        "net": net_guest,
        "job": job_guest,
        "service": service_guest,
        "pipeline": pipeline_guest,
    }
    return builders[name]()
