"""The guests fabric itself builds and ships (package data), one builder each.

``fabric demo`` and the benchmarks run these; the test suite uses them too,
so a guest is built one way wherever it runs. Sources live beside this
module (``dbbench/app.py``); builds are cached by content hash under
``~/.cache/fabric`` (:func:`fabric.build.cache_dir`).
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["DBBENCH_DIR", "DBPOOL_SERVICE", "SQL_WORLD", "dbbench", "dbbench_sql"]

DBBENCH_DIR = Path(__file__).resolve().parent / "dbbench"

#: The native service whose guest SDK (``fabric_dbpool``, ``fabric_pgwire``) dbbench imports.
DBPOOL_SERVICE = "services.dbpool.service:DbPoolService"

#: The world of ``fabric/wit/fabric.wit`` that adds the typed ``fabric:dbpool/sql`` import.
SQL_WORLD = "sql-command"


@functools.cache
def dbbench() -> Path:
    """World ``command``: pooled / pg-direct / mysql-direct round trips, transactions.

    Built with the guest SDK that the dbpool service offers and PyMySQL staged.
    """
    return _build_dbbench("command")


@functools.cache
def dbbench_sql() -> Path:
    """The same guest built against the world ``sql-command``: its SDK reaches the
    dbpool service through the typed ``fabric:dbpool/sql`` import, not a socket."""
    return _build_dbbench(SQL_WORLD)


def _build_dbbench(world: str) -> Path:
    from fabric.build import build_python_guest, stage_packages
    from fabric.workload.native import offered_guest_paths

    paths = [*offered_guest_paths([DBPOOL_SERVICE]), stage_packages(["pymysql"])]
    return build_python_guest(DBBENCH_DIR, world=world, extra_paths=paths)
