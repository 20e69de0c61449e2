"""`VirtualNetwork`: a workload's loopback (`NetworkCore`) plus what reaches
outside it and what native code uses.

The core (`network.py`) knows ports, guests, policy and pipes, and nothing
of real sockets; this module adds the egress bridge (a connect to an egress
route becomes a real connection, `bridge.run_egress`), the ingress servers
(real listeners forwarding to virtual ports, `bridge.IngressServer`) and the
asyncio-shaped API native services use (`start_server`, `open_connection`,
`streams.py`). Import order runs one way: this module imports the bridge and
the streams, which import the core, which imports the sockets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from . import streams
from .bridge import IngressServer, run_egress
from .network import GuestNetwork, NetworkCore, NetworkStatistics
from .pipe import PipeEnd
from .policy import EgressRule
from .streams import VirtualServer, VirtualStreamReader, VirtualStreamWriter
from .tcp import ConnectAttempt

__all__ = ["VirtualNetwork"]


class VirtualNetwork(NetworkCore):
    """The virtual loopback network of one workload."""

    async def _run_egress(
        self,
        rule: EgressRule,
        attempt: ConnectAttempt,
        client_end: PipeEnd,
        bridge_end: PipeEnd,
        connect_timeout: float,
    ) -> bool:
        return await run_egress(rule, attempt, client_end, bridge_end, connect_timeout)

    # -- native asyncio-shaped API ----------------------------------------------------

    async def start_server(
        self,
        handler: Callable[[VirtualStreamReader, VirtualStreamWriter], Awaitable[None]],
        port: int,
        *,
        host: str = "127.0.0.1",
        backlog: int = 128,
        guest: GuestNetwork | None = None,
    ) -> VirtualServer:
        """Like `asyncio.start_server`, on this workload's loopback."""
        return await streams.start_server(
            guest or self.native, handler, port, host=host, backlog=backlog
        )

    async def open_connection(
        self, port: int, host: str = "127.0.0.1", *, guest: GuestNetwork | None = None
    ) -> tuple[VirtualStreamReader, VirtualStreamWriter]:
        """Like `asyncio.open_connection`, on this workload's loopback (or an egress route)."""
        return await streams.open_connection(guest or self.native, port, host)

    # -- ingress ------------------------------------------------------------------------

    async def start_ingress(self) -> list[IngressServer]:
        """Open a real listener for every ingress rule of the policy."""
        for rule in self.policy.ingress:
            server = IngressServer(self, rule)
            await server.start()
            self._ingress.append(server)
        return self.ingress_servers

    @property
    def ingress_servers(self) -> list[IngressServer]:
        return [s for s in self._ingress if isinstance(s, IngressServer)]

    def statistics(self) -> NetworkStatistics:
        """The core's statistics plus each ingress listener's counters."""
        ingress = tuple(s.statistics() for s in self.ingress_servers)
        return msgspec.structs.replace(super().statistics(), ingress=ingress)
