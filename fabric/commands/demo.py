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
    p.add_argument(
        "--invocations",
        type=int,
        default=300,
        help="invocations per pooled path, one at a time and again with --concurrency",
    )
    p.add_argument("--direct", type=int, default=60, help="the same for connect-per-invocation")
    p.add_argument(
        "--concurrency", type=int, default=8, help="invocations in flight for the throughput"
    )
    p.add_argument(
        "--pg-port",
        type=int,
        default=None,
        help="measure the PostgreSQL on 127.0.0.1 at this port when one answers (with its own "
        "authentication); by default, and when none answers there, a throwaway server with "
        "password authentication (scram-sha-256) is started",
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
