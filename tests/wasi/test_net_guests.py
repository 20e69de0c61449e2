"""The ``net`` guest (CPython's socket, asyncio and PyMySQL under componentize-py)
running inside fabric workloads, over the virtual network.

Services get the *service* role (they may bind fixed ports), invocations of
the ``client`` component the *component* role (port 0 only, private to the
instance). Every guest prints ``key=value`` facts; the last part of the file
runs the conformance modes of ``tests.reference.cases.NET_CASES`` and
compares them with what the same guest printed under the wasmtime CLI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path

import pytest

from fabric.net import VirtualStreamReader as Reader
from fabric.net import VirtualStreamWriter as Writer
from fabric.runtime import Runtime
from fabric.workload import State
from tests.reference.cases import NET_CASES, Case, assert_facts
from tests.wasi.netlib import (
    TIMEOUT,
    free_host_port,
    pattern,
    pipe_ends,
    running,
    service,
    workload,
)

# --- one workload: services and components ---------------------------------------------


async def test_echo_service_serves_client_components(runtime: Runtime, net_wasm: Path) -> None:
    big = "x" * 100_000
    wl = workload(
        "shop", net_wasm, services=[service("echo", net_wasm, "echo-server", "7", "2", ports=[7])]
    )
    async with running(runtime, wl) as fab:
        hello = (await fab.invoke("shop", "echo-client", "7", "hello fabric")).check()
        assert hello.facts == {"echo": "hello fabric", "echo_len": "12", "match": "1"}
        large = (await fab.invoke("shop", "echo-client", "7", big)).check()
        assert large.facts["echo_len"] == str(len(big))
        assert large.facts["match"] == "1"
        served = await fab.service_facts("shop", "echo")
        assert served == {"listening": "7", "served": "2", "echoed_bytes": str(12 + len(big))}
        stats = fab.network("shop").statistics()
    assert stats.connections == 2
    assert stats.refused == stats.denied == 0


async def test_same_port_in_two_workloads(runtime: Runtime, net_wasm: Path) -> None:
    """Both workloads listen on :7; each client reaches the server of its own workload."""
    messages = {"left": "to the left", "right": "to the right, a longer message"}
    workloads = [
        workload(
            name, net_wasm, services=[service("echo", net_wasm, "echo-server", "7", "1", ports=[7])]
        )
        for name in messages
    ]
    async with running(runtime, *workloads) as fab:
        for name in messages:
            assert fab.network(name).statistics().tcp_listening == (7,)
        results = await asyncio.gather(
            *(fab.invoke(name, "echo-client", "7", text) for name, text in messages.items())
        )
        for result, text in zip(results, messages.values(), strict=True):
            assert result.check().facts["echo"] == text
        for name, text in messages.items():
            served = await fab.service_facts(name, "echo")
            # Each server echoed exactly its own client's bytes.
            assert served["echoed_bytes"] == str(len(text))
            assert fab.network(name).statistics().connections == 1


async def test_ephemeral_port_of_a_service(runtime: Runtime, net_wasm: Path) -> None:
    """A service listening on port 0 reports the real port, and clients reach it there."""
    wl = workload("eph", net_wasm, services=[service("echo", net_wasm, "echo-server", "0", "1")])
    async with running(runtime, wl) as fab:
        port = int(await fab.wait_fact("eph", "echo", "listening"))
        assert 49152 <= port <= 65535
        assert port in fab.network("eph").statistics().tcp_listening
        result = (await fab.invoke("eph", "echo-client", str(port), "via getsockname")).check()
        assert result.facts["match"] == "1"
        assert (await fab.service_facts("eph", "echo"))["served"] == "1"
        # A component's bind to port 0 works too, and getsockname() gives the port.
        bound = (await fab.invoke("eph", "bind", "0")).check()
        assert bound.facts == {"bind": "ok", "port_nonzero": "1"}


async def test_bind_collision(runtime: Runtime, net_wasm: Path) -> None:
    wl = workload(
        "clash",
        net_wasm,
        services=[
            service("echo", net_wasm, "echo-server", "7", ports=[7]),
            service("prober", net_wasm, "bind", "7"),
            service("second", net_wasm, "echo-server", "7", restart="on-failure"),
        ],
    )
    async with running(runtime, wl) as fab:
        assert await fab.service_facts("clash", "prober") == {"bind": "EADDRINUSE"}
        # A second server on the port dies of EADDRINUSE and backs off.
        status = await fab.wait_service("clash", "second", TIMEOUT, State.BACKING_OFF)
        assert status.exits == 1
        assert any("Address in use" in line for line in fab.lines.of("clash/second"))
        # The first one still serves.
        result = (await fab.invoke("clash", "echo-client", "7", "still here")).check()
        assert result.facts["echo"] == "still here"


async def test_connect_without_listener_is_refused(runtime: Runtime, net_wasm: Path) -> None:
    async with running(runtime, workload("empty", net_wasm)) as fab:
        result = await fab.invoke("empty", "echo-client", "9", "nobody")
        stats = fab.network("empty").statistics()
    # As under wasmtime: the guest's create_connection() raises ECONNREFUSED.
    assert result.trapped
    assert "ConnectionRefusedError" in result.stderr
    assert stats.refused == 1
    assert stats.denied == 0


async def test_half_close(runtime: Runtime, net_wasm: Path) -> None:
    wl = workload(
        "half", net_wasm, services=[service("echo", net_wasm, "echo-server", "7", ports=[7])]
    )
    async with running(runtime, wl) as fab:
        result = (await fab.invoke("half", "half-close", "7")).check()
        # The same facts as under wasmtime (tests/reference/test_net_reference.py).
        assert result.facts == {"send_after_shutdown": "ESHUTDOWN", "received": "part1", "eof": "1"}

        # A native peer sees the guest's EOF while its own direction stays open.
        saw_eof = asyncio.Event()

        async def upper(reader: Reader, writer: Writer) -> None:
            data = await reader.read()  # to EOF
            saw_eof.set()
            writer.write(data.upper())
            await writer.drain()
            writer.close()

        server = await fab.network("half").start_server(upper, 8000)
        try:
            reply = (await fab.invoke("half", "echo-client", "8000", "shout")).check()
        finally:
            server.close()
            await server.wait_closed()
        assert saw_eof.is_set()
        assert reply.facts["echo"] == "SHOUT"


async def test_slow_reader_keeps_a_fast_writer_bounded(runtime: Runtime, net_wasm: Path) -> None:
    """A guest sending 4 MiB to a reader that takes 16 KiB at a time: the pipe never
    holds more than its high-water mark, and every byte arrives."""
    nbytes = 4 << 20
    peak = 0
    digest = hashlib.sha256()
    received = 0

    async def slow(reader: Reader, writer: Writer) -> None:
        nonlocal peak, received
        end = writer.end
        while True:
            peak = max(peak, end.statistics().inbound_buffered)
            chunk = await reader.read(16384)
            if not chunk:
                break
            received += len(chunk)
            digest.update(chunk)
            await asyncio.sleep(0)  # one read per loop turn: the writer runs in between
        writer.close()

    async with running(runtime, workload("slow", net_wasm)) as fab:
        net = fab.network("slow")
        high_water = net.policy.high_water
        server = await net.start_server(slow, 9000)
        try:
            sent = (await fab.invoke("slow", "bulk-send", "9000", str(nbytes))).check()
        finally:
            server.close()
            await server.wait_closed()
    assert received == nbytes
    assert sent.facts["sha256"] == digest.hexdigest() == hashlib.sha256(pattern(nbytes)).hexdigest()
    assert 0 < peak <= high_water


async def test_bulk_transfer_between_guests(runtime: Runtime, net_wasm: Path) -> None:
    """Guest to guest: every byte arrives, and no pipe, sampled on every loop turn,
    ever holds more than the high-water mark."""
    nbytes = 4 << 20
    wl = workload(
        "bulk", net_wasm, services=[service("sink", net_wasm, "bulk-recv", "9001", ports=[9001])]
    )
    async with running(runtime, wl) as fab:
        net = fab.network("bulk")
        peak = 0
        done = False

        async def sample() -> None:
            nonlocal peak
            while not done:
                for end in pipe_ends(net):
                    stats = end.statistics()
                    peak = max(peak, stats.inbound_buffered, stats.outbound_buffered)
                await asyncio.sleep(0)

        sampler = asyncio.create_task(sample())
        try:
            sent = (await fab.invoke("bulk", "bulk-send", "9001", str(nbytes))).check()
        finally:
            done = True
            await sampler
        got = await fab.service_facts("bulk", "sink")
    assert got["received"] == sent.facts["sent"] == str(nbytes)
    assert got["sha256"] == sent.facts["sha256"] == hashlib.sha256(pattern(nbytes)).hexdigest()
    assert peak <= net.policy.high_water


async def test_peer_dropped_mid_stream(runtime: Runtime, net_wasm: Path) -> None:
    async def drop_after_64k(reader: Reader, writer: Writer) -> None:
        await reader.readexactly(65536)
        writer.abort()

    async def reply_then_drop(reader: Reader, writer: Writer) -> None:
        await reader.read()
        writer.write(b"partial")
        await writer.drain()
        writer.abort()

    async with running(runtime, workload("drop", net_wasm)) as fab:
        net = fab.network("drop")
        servers = [
            await net.start_server(drop_after_64k, 9100),
            await net.start_server(reply_then_drop, 9101),
        ]
        try:
            writer = await fab.invoke("drop", "bulk-send", "9100", str(8 << 20))
            reader = await fab.invoke("drop", "echo-client", "9101", "hello?")
            # Nothing of either guest is left behind: only the two listeners.
            assert net.statistics().sockets == 2
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()
    # What the guests see is what they see under wasmtime for a kernel reset
    # (test_sockets_reference.test_reset_by_the_peer_fails_*_alike): the first
    # stream call after the reset is last-operation-failed, which wasi-libc
    # turns into EIO for send() as for recv(), whether or not the sender
    # polled in between (docs/network.md, "Differences from wasmtime").
    assert writer.trapped
    assert "in mode_bulk_send\nOSError: [Errno 29] I/O error" in writer.stderr, writer.stderr
    assert reader.trapped
    assert "OSError: [Errno 29] I/O error" in reader.stderr, reader.stderr


async def test_udp_echo(runtime: Runtime, net_wasm: Path) -> None:
    wl = workload(
        "dgram", net_wasm, services=[service("udp", net_wasm, "udp-echo-server", "53", "2")]
    )
    async with running(runtime, wl) as fab:
        await fab.wait_fact("dgram", "udp", "listening")
        for text in ("a datagram", "another"):
            # The reply goes to the component's private ephemeral port: a reply to
            # a datagram it sent, so it is delivered.
            result = (await fab.invoke("dgram", "udp-client", "53", text)).check()
            assert result.facts == {"reply": text, "from_port": "53", "match": "1"}
        assert (await fab.service_facts("dgram", "udp"))["echoed"] == "2"
        stats = fab.network("dgram").statistics()
    assert stats.datagrams_delivered == 4
    assert stats.datagrams_dropped == 0


async def test_name_lookup(runtime: Runtime, net_wasm: Path) -> None:
    wl = workload(
        "names",
        net_wasm,
        names={"db": "127.0.0.1"},
        egress=[{"dest": "mariadb", "port": 3306, "to": "127.0.0.1:3306"}],
    )
    async with running(runtime, wl) as fab:

        async def lookup(name: str) -> str:
            return (await fab.invoke("names", "lookup", name)).check().facts["addrs"]

        # docs/network.md, "Names": localhost is 127.0.0.1, then ::1.
        assert await lookup("localhost") == "127.0.0.1,::1"
        assert await lookup("db") == "127.0.0.1"
        # An egress rule's host name resolves to a synthetic 198.18.0.0/15 address.
        assert (await lookup("mariadb")).startswith("198.18.")
        # No host DNS unless the policy allows it: EAI_NONAME.
        assert await lookup("nonexistent.invalid") == "gaierror:-2"


async def test_component_may_not_bind_a_fixed_port_but_asyncio_works(
    runtime: Runtime, net_wasm: Path
) -> None:
    wl = workload(
        "comp", net_wasm, services=[service("echo", net_wasm, "echo-server", "7", ports=[7])]
    )
    async with running(runtime, wl) as fab:
        denied = (await fab.invoke("comp", "bind", "8080")).check()
        assert denied.facts == {"bind": "EACCES"}
        assert fab.network("comp").statistics().denied == 1
        # asyncio's self-pipe (bind port 0, listen, connect to itself) is allowed.
        clients = (await fab.invoke("comp", "asyncio-clients", "7", "4")).check()
        assert clients.facts == {"clients": "4", "ok": "4"}
        assert fab.network("comp").statistics().denied == 1


async def test_asyncio_clients_in_concurrent_invocations(runtime: Runtime, net_wasm: Path) -> None:
    invocations, per_invocation = 4, 8
    total = invocations * per_invocation
    wl = workload(
        "many",
        net_wasm,
        services=[service("echo", net_wasm, "echo-server", "7", str(total), ports=[7])],
    )
    async with running(runtime, wl) as fab:
        results = await asyncio.gather(
            *(
                fab.invoke("many", "asyncio-clients", "7", str(per_invocation))
                for _ in range(invocations)
            )
        )
        for result in results:
            assert result.check().facts == {"clients": "8", "ok": "8"}
        served = await fab.service_facts("many", "echo")
    echoed = invocations * sum(len(f"client-{i}-") * (i + 1) for i in range(per_invocation))
    assert served["served"] == str(total)
    assert served["echoed_bytes"] == str(echoed)


# --- egress and ingress ----------------------------------------------------------------

_PYMYSQL_FACTS = {
    "select1": "1",
    "rows": "1:alpha;2:beta;3:gamma \u00e9",
    "roundtrip": "1",
    "closed": "1",
}


async def test_egress_refused_without_a_rule(runtime: Runtime, net_wasm: Path) -> None:
    async with running(runtime, workload("closed", net_wasm)) as fab:
        # 127.0.0.1 is the workload's own loopback: the host's MariaDB is not there.
        loopback = await fab.invoke("closed", "pymysql", "127.0.0.1", "3306")
        # Any other address needs an egress rule: access-denied (EACCES).
        outside = await fab.invoke("closed", "pymysql", "198.51.100.7", "3306")
        stats = fab.network("closed").statistics()
    assert loopback.trapped and "Connection refused" in loopback.stderr
    assert outside.trapped and "Permission denied" in outside.stderr
    assert (stats.refused, stats.denied, stats.egress_total) == (1, 1, 0)


async def test_egress_rule_reaches_mariadb(runtime: Runtime, net_wasm: Path) -> None:
    wl = workload(
        "db",
        net_wasm,
        egress=[
            {"dest": "127.0.0.1", "port": 3306},
            {"dest": "mariadb", "port": 3306, "to": "127.0.0.1:3306"},
        ],
    )
    async with running(runtime, wl) as fab:
        by_address = (await fab.invoke("db", "pymysql", "127.0.0.1", "3306")).check()
        by_name = (await fab.invoke("db", "pymysql", "mariadb", "3306")).check()
        stats = fab.network("db").statistics()
    assert by_address.facts == by_name.facts == _PYMYSQL_FACTS
    assert stats.egress_total == 2
    assert stats.denied == 0


async def test_ingress_to_a_guest_service(runtime: Runtime, net_wasm: Path) -> None:
    host_port = free_host_port()
    wl = workload(
        "edge",
        net_wasm,
        services=[service("echo", net_wasm, "echo-server", "7", "5", ports=[7])],
        ingress=[{"port": 7, "host_port": host_port}],
    )

    async def client(message: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", host_port)
        writer.write(message)
        await writer.drain()
        writer.write_eof()
        reply = await reader.read()
        writer.close()
        await writer.wait_closed()
        return reply

    async with running(runtime, wl) as fab:
        messages = [f"real client {i}".encode() for i in range(4)] + [b"y" * 300_000]
        replies = await asyncio.gather(*(client(m) for m in messages))
        assert replies == messages
        served = await fab.service_facts("edge", "echo")
        assert fab.network("edge").statistics().ingress_servers == 1
    assert served["served"] == "5"
    assert served["echoed_bytes"] == str(sum(map(len, messages)))


# --- the differential check against the wasmtime CLI ------------------------------------

# Where fabric answers differently from the wasmtime CLI on purpose
# (docs/network.md). Keys: (case id, role) -> facts that replace the recorded ones.
_LOCALHOST = "127.0.0.1,::1"  # "Names": localhost is 127.0.0.1, then ::1 (no host resolver)
_DIFFERENCES: dict[tuple[str, str], dict[str, str]] = {
    ("ip-name-lookup", "service"): {
        "lookup.localhost": _LOCALHOST,
        # No host DNS unless the policy allows it: name-unresolvable, always.
        "lookup.nonexistent.invalid": "gaierror:-2",
    },
    ("lookup-localhost", "service"): {"addrs": _LOCALHOST},
    # "Policy": a component may bind port 0 only; a fixed port is access-denied
    # before the port table is asked (wasmtime: EADDRINUSE from the kernel).
    ("udp-states", "component"): {"addrinuse": "EACCES"},
}
_DIFFERENCES[("ip-name-lookup", "component")] = _DIFFERENCES[("ip-name-lookup", "service")]
_DIFFERENCES[("lookup-localhost", "component")] = _DIFFERENCES[("lookup-localhost", "service")]

# tcp-bind binds fixed ports throughout and stops at the first refusal, which a
# component always gets: it runs as a service only (the component's refusal is
# test_component_may_not_bind_a_fixed_port_but_asyncio_works).
_SERVICE_ONLY = frozenset({"tcp-bind"})


def under_fabric(case: Case, role: str) -> Case:
    """``case`` with the documented differences of fabric for a guest of ``role``."""
    changed = _DIFFERENCES.get((case.id, role))
    if changed is None:
        return case
    return dataclasses.replace(
        case, expect={**case.expect, **changed}, ignore=case.ignore - changed.keys()
    )


@pytest.mark.parametrize("case", NET_CASES, ids=lambda case: case.id)
async def test_conformance_as_service(runtime: Runtime, net_wasm: Path, case: Case) -> None:
    wl = workload("conf", net_wasm, services=[service("probe", net_wasm, *case.args)])
    async with running(runtime, wl) as fab:
        facts = await fab.service_facts("conf", "probe")
    assert_facts(under_fabric(case, "service"), facts)


@pytest.mark.parametrize(
    "case", [c for c in NET_CASES if c.id not in _SERVICE_ONLY], ids=lambda case: case.id
)
async def test_conformance_as_component(runtime: Runtime, net_wasm: Path, case: Case) -> None:
    async with running(runtime, workload("conf", net_wasm)) as fab:
        result = await fab.invoke("conf", *case.args)
    assert result.exit_code == case.returncode, result.stderr
    assert_facts(under_fabric(case, "component"), result.facts)
