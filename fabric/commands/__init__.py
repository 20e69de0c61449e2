"""Subcommands of the ``fabric`` CLI, one module each."""

from __future__ import annotations

import argparse
from typing import Any

from . import bench, demo, exec_, workload


def register_all(sub: Any) -> None:
    for module in (exec_, workload, bench, demo):
        module.register(sub)


__all__ = ["argparse", "register_all"]
