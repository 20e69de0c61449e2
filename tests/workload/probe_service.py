"""A native service for the readiness tests: it crashes once its flag file exists."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any


class FlagService:
    """Serves (no ports: ready once started) until the file ``config["flag"]`` exists,
    then raises; publishes a few numbers for ``fabric_service_stat``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.flag = Path(config["flag"])
        self.polls = 0

    async def serve(self, ctx: Any) -> None:
        ctx.publish_stats(lambda: {"polls": self.polls, "nested": {"ok": True}, "name": "x"})
        while not self.flag.exists():
            self.polls += 1
            await asyncio.sleep(0.02)
        raise RuntimeError(f"flag {self.flag} is set")
