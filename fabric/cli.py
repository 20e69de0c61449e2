"""The ``fabric`` command line.

Subcommands live in small modules under ``fabric/commands/``; this module
only builds the parser and maps errors a user can act on to a one-line
message and a non-zero exit status (no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .commands import plugin_commands, register_all, run_plugin
from .errors import FabricError, UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fabric",
        description="A service fabric for WebAssembly components: per-workload virtual "
        "loopback networks, supervised services, pooled databases.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_all(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    plugins = plugin_commands()
    if args_list and args_list[0] in plugins:
        # A command from another package (``fabric bench``) has its own parser.
        return run_plugin(plugins[args_list[0]], args_list[1:])
    parser = build_parser()
    rest: list[str] = []
    if "--" in args_list:
        # Everything after "--" belongs to the guest, even if it looks like an option.
        cut = args_list.index("--")
        args_list, rest = args_list[:cut], args_list[cut + 1 :]
    args = parser.parse_args(args_list)
    if rest:
        if not hasattr(args, "args") or not isinstance(args.args, list):
            parser.error(f"{args.command} takes no arguments after --")
        args.args = [*args.args, *rest]
    try:
        code: int = args.handler(args)
    except UsageError as e:
        print(f"fabric {args.command}: {_one_line(e)}", file=sys.stderr)
        return 2
    except FabricError as e:
        # errors fabric raises on purpose: their message is for the user
        print(f"fabric {args.command}: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def _one_line(error: BaseException) -> str:
    """The message of ``error``; a ManifestError keeps one line per problem."""
    return str(error) or type(error).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
