"""A tiny native service: echoes every line back, prefixed with a greeting.

Used by ``two-workloads.toml``: two workloads each run it on virtual port 8080
of their own loopback network, published on different host ports.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fabric.workload.native import ServiceContext, StreamReaderLike, StreamWriterLike


class EchoService:
    def __init__(self, config: dict[str, Any]) -> None:
        self.port = int(config.get("port", 8080))
        self.greeting = str(config.get("greeting", "")).encode()
        self.connections = 0
        self.lines = 0

    async def serve(self, ctx: ServiceContext) -> None:
        ctx.publish_stats(lambda: {"connections": self.connections, "lines": self.lines})
        await ctx.network.start_server(self.handle, self.port)
        ctx.logger.info("echo service of %s listening on :%d", ctx.workload, self.port)
        await asyncio.Event().wait()  # serve until the supervisor cancels us

    async def handle(self, reader: StreamReaderLike, writer: StreamWriterLike) -> None:
        self.connections += 1
        while line := await reader.readline():
            self.lines += 1
            writer.write(self.greeting + line)
            await writer.drain()
        writer.close()
