"""Adapter components composed in front of guests (WAT, built with ``build_wat_guest``).

``LATIN1_STREAMS``: ``wasi:io/streams`` ``write`` and ``read`` over
``fabric:io/latin1`` (docs/bytes-as-strings.md).
"""

from __future__ import annotations

from pathlib import Path

LATIN1_STREAMS = Path(__file__).resolve().parent / "latin1_streams.wat"

__all__ = ["LATIN1_STREAMS"]
