"""Subcommands of the ``fabric`` CLI, one module each.

Other installed packages may add commands through the ``fabric.commands``
entry-point group: ``name = "module:main"``, where ``main(argv) -> int``
parses its own arguments (``fabric bench`` is provided this way, by
``benches``). fabric itself never imports them until the command is run.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

from . import demo, exec_, workload

PluginMain = Callable[[Sequence[str]], int]

ENTRY_POINT_GROUP = "fabric.commands"


@functools.cache
def plugin_commands() -> dict[str, EntryPoint]:
    """Commands other packages provide, by name (fabric's own names win); looked up
    once per process (`fabric.cli.main` dispatches on them, the parser lists them)."""
    own = {"exec", "run", "validate", "status", "invoke", "demo"}
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in own}


def run_plugin(entry: EntryPoint, argv: Sequence[str]) -> int:
    """Load a plugin command and hand it every argument after its name."""
    main = cast(PluginMain, entry.load())
    return main(list(argv))


def register_all(sub: Any) -> None:
    for module in (exec_, workload, demo):
        module.register(sub)
    for name, entry in sorted(plugin_commands().items()):
        # Listed in --help; ``fabric.cli.main`` dispatches them before parsing,
        # so their own options reach their own parser.
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=f"(provided by {entry.value.split(':')[0]})", add_help=False
        )
        p.add_argument("rest", nargs=argparse.REMAINDER)


__all__ = ["ENTRY_POINT_GROUP", "plugin_commands", "register_all", "run_plugin"]
