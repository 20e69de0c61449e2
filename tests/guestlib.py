"""Where the test guests live, and how to get a built one."""

from __future__ import annotations

from pathlib import Path

from fabric.build import build_wat_guest

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "tests" / "guests"


def wat_guest(name: str) -> Path:
    """Build (or take from the cache) ``tests/guests/wat/<name>.wat``."""
    return build_wat_guest(GUESTS / "wat" / f"{name}.wat")
