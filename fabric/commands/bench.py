"""``fabric bench``: the side-by-side benchmark suite (see ``benches/``)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="run the benchmark suite (JSON, markdown and PNG reports)",
        add_help=False,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from benches.cli import main as bench_main

    return bench_main(args.rest)
