"""``fabric demo``: the pooled-database demo (see ``fabric/demo.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import run_async


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="run the pooled-database demo and print a side-by-side table"
    )
    p.add_argument("--invocations", type=int, default=300, help="pooled invocations")
    p.add_argument("--direct", type=int, default=60, help="connect-per-invocation invocations")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument(
        "--pg-port",
        type=int,
        default=5432,
        help="where to look for PostgreSQL on 127.0.0.1 (a throwaway one starts if none answers)",
    )
    p.add_argument("--out", type=Path, default=Path("demo-results"), help="where to write results")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from fabric.demo import run_demo

    result = run_async(
        run_demo(
            invocations=args.invocations,
            direct_invocations=args.direct,
            concurrency=args.concurrency,
            out=args.out,
            pg_port=args.pg_port,
        )
    )
    failed = sum(p.errors for p in result.paths)
    return 0 if failed == 0 else 1
