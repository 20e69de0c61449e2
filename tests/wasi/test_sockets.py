"""wasi:sockets on the virtual network, as real componentize-py guests use it.

The ``net`` guest (``tests/guests/net``) uses CPython's ``socket`` and
``asyncio`` over wasi-libc; services run with the ``service`` role,
clients with the ``component`` role, as a workload runs them. Every test
also checks what the network holds afterwards: a guest that ended, however
it ended, holds no socket and no port.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fabric.build import WIT_DIR
from fabric.engine import Err
from fabric.net import (
    EgressRule,
    IngressRule,
    IpAddressFamily,
    NetworkPolicy,
    Role,
    SocketAddress,
    VirtualNetwork,
    VirtualStreamReader,
    VirtualStreamWriter,
)
from fabric.runtime import Runtime
from fabric.wasi.io import IoError, poll_now
from fabric.wasi.sockets import (
    NO_NETWORK,
    TCP_METHODS,
    UDP_METHODS,
    guest_network,
    interfaces,
    network_error_code,
)
from fabric.wasi.sockets._common import from_address, to_address
from fabric.wasi.sockets.tcp import TcpOut, TcpSocketResource
from tests.guestlib import GUESTS
from tests.net.helpers import connect, listen
from tests.reference.wasmtime_cli import parse_facts
from tests.wasi.guestnet import TIMEOUT, Guest, run
from tests.wasi.netlib import pattern

SERVICE = Role.SERVICE
MIB = 1 << 20


@pytest.fixture
async def net() -> AsyncIterator[VirtualNetwork]:
    network = VirtualNetwork("test")
    yield network
    await network.aclose()


def assert_released(network: VirtualNetwork) -> None:
    """Nothing a finished guest held is left on the network."""
    stats = network.statistics()
    assert stats.sockets == 0, network.guests
    assert stats.tcp_ports == () and stats.udp_ports == ()
    assert {g.name for g in network.guests} == {"native"}


async def eventually(predicate: Callable[[], bool]) -> bool:
    """Poll ``predicate`` until it holds (a hang guard, not a timing assertion)."""
    for _ in range(int(TIMEOUT * 100)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


# --- one workload: services and components ---------------------------------------
async def test_echo_service_and_clients_in_one_workload(
    runtime: Runtime, net_wasm: Path, net: VirtualNetwork
) -> None:
    server = Guest(runtime, net_wasm, net, "echo-server", "7", "3", role=SERVICE, name="echo")
    assert await server.wait_fact("listening") == "7"
    assert net.statistics().tcp_listening == (7,)
    client = (await run(runtime, net_wasm, net, "echo-client", "7", "hello there")).check()
    assert client.facts == {"echo": "hello there", "echo_len": "11", "match": "1"}
    half = (await run(runtime, net_wasm, net, "half-close", "7")).check()
    assert half.facts == {"send_after_shutdown": "ESHUTDOWN", "received": "part1", "eof": "1"}
    many = (await run(runtime, net_wasm, net, "asyncio-clients", "7", "1")).check()
    assert many.facts == {"clients": "1", "ok": "1"}
    done = (await server.finish()).check()
    assert done.facts["served"] == "3"
    assert done.facts["echoed_bytes"] == str(11 + 5 + len("client-0-"))
    # 3 clients, plus the self-pipe of the asyncio client's event loop
    assert net.statistics().connections == 4
    assert_released(net)


async def test_asyncio_guest_with_concurrent_connections(
    runtime: Runtime, net_wasm: Path, net: VirtualNetwork
) -> None:
    server = Guest(runtime, net_wasm, net, "echo-server", "7", "16", role=SERVICE, name="echo")
    await server.wait_fact("listening")
    clients = (await run(runtime, net_wasm, net, "asyncio-clients", "7", "16")).check()
    assert clients.facts == {"clients": "16", "ok": "16"}
    done = (await server.finish()).check()
    assert done.facts["served"] == "16"
    assert done.facts["echoed_bytes"] == str(sum(len(f"client-{i}-") * (i + 1) for i in range(16)))
    assert_released(net)


async def test_same_port_in_two_workloads_each_client_reaches_its_own(
    runtime: Runtime, net_wasm: Path
) -> None:
    shop, blog = VirtualNetwork("shop"), VirtualNetwork("blog")
    try:
        servers = {
            n: Guest(runtime, net_wasm, n, "echo-server", "8080", "1", role=SERVICE, name="web")
            for n in (shop, blog)
        }
        for server in servers.values():
            assert await server.wait_fact("listening") == "8080"
        to_shop = run(runtime, net_wasm, shop, "echo-client", "8080", "to the shop")
        to_blog = run(runtime, net_wasm, blog, "echo-client", "8080", "blog!")
        shop_client, blog_client = await asyncio.gather(to_shop, to_blog)
        assert shop_client.check().facts["echo"] == "to the shop"
        assert blog_client.check().facts["echo"] == "blog!"
        shop_done, blog_done = [(await s.finish()).check() for s in servers.values()]
        assert shop_done.facts["echoed_bytes"] == "11"
        assert blog_done.facts["echoed_bytes"] == "5"
        for n in (shop, blog):
            assert n.statistics().connections == 1
            assert_released(n)
    finally:
        await shop.aclose()
        await blog.aclose()


async def test_ephemeral_port_of_a_service_is_reachable(
    runtime: Runtime, net_wasm: Path, net: VirtualNetwork
) -> None:
    server = Guest(runtime, net_wasm, net, "echo-server", "0", "1", role=SERVICE, name="echo")
    port = int(await server.wait_fact("listening"))
    assert 49152 <= port <= 65535
    assert net.statistics().tcp_listening == (port,)
    client = await run(runtime, net_wasm, net, "echo-client", str(port), "ephemeral")
    assert client.check().facts["echo"] == "ephemeral"
    assert (await server.finish()).check().facts["served"] == "1"
    assert_released(net)


async def test_a_components_ephemeral_port_is_private(
    runtime: Runtime, net_wasm: Path, net: VirtualNetwork
) -> None:
    """A component may listen on port 0 (asyncio needs it); nobody else can reach it."""
    private = Guest(runtime, net_wasm, net, "echo-server", "0", "1", name="component")
    port = await private.wait_fact("listening")
    outsider = await run(runtime, net_wasm, net, "echo-client", port, "x", role=SERVICE)
    assert outsider.trapped
    assert "ConnectionRefusedError" in outsider.stderr
    assert not net.is_listening(int(port))
    assert net.statistics().refused == 1
    await private.stop()
    assert_released(net)


async def test_bind_collision_in_one_workload(
    runtime: Runtime, net_wasm: Path, net: VirtualNetwork
) -> None:
    server = Guest(runtime, net_wasm, net, "echo-server", "9000", "1", role=SERVICE, name="a")
    await server.wait_fact("listening")
    second = (await run(runtime, net_wasm, net, "bind", "9000", role=SERVICE, name="b")).check()
    assert second.facts == {"bind": "EADDRINUSE"}
    reader, writer = await net.open_connection(9000)
    writer.write(b"done")
    writer.write_eof()
    assert await reader.read() == b"done"
    writer.close()
    assert (await server.finish()).check().facts["served"] == "1"
    # The port is free again once its listener is gone.
    again = (await run(runtime, net_wasm, net, "bind", "9000", role=SERVICE)).check()
    assert again.facts == {"bind": "ok", "port_nonzero": "1"}
    assert_released(net)


async def test_connect_with_no_listener_is_refused(
    runtime: Runtime, net_wasm: Path, net: VirtualNetwork
) -> None:
    client = await run(runtime, net_wasm, net, "echo-client", "9999", "anyone?")
    assert client.trapped  # the guest does not catch the error
    assert "ConnectionRefusedError" in client.stderr
    assert net.statistics().refused == 1
    assert_released(net)


async def test_component_may_not_bind_a_fixed_port(
    runtime: Runtime, net_wasm: Path, net: VirtualNetwork
) -> None:
    denied = (await run(runtime, net_wasm, net, "bind", "8080")).check()
    assert denied.facts == {"bind": "EACCES"}
    assert net.statistics().denied == 1
    ephemeral = (await run(runtime, net_wasm, net, "bind", "0")).check()
    assert ephemeral.facts == {"bind": "ok", "port_nonzero": "1"}
    service = (await run(runtime, net_wasm, net, "bind", "8080", role=SERVICE)).check()
    assert service.facts == {"bind": "ok", "port_nonzero": "1"}
    assert_released(net)


# --- streams: backpressure, resets ---------------------------------------------------
async def test_slow_reader_keeps_a_fast_writer_bounded(runtime: Runtime, net_wasm: Path) -> None:
    high_water = 64 * 1024
    net = VirtualNetwork("slow", NetworkPolicy(high_water=high_water))
    nbytes = 2 * MIB
    seen: list[int] = []
    digest = hashlib.sha256()

    async def slow_reader(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
        while True:
            await asyncio.sleep(0.001)  # a slow consumer: the guest must wait for it
            seen.append(writer.end.statistics().inbound_buffered)
            chunk = await reader.read(16 * 1024)
            if not chunk:
                break
            digest.update(chunk)
        writer.close()

    try:
        server = await net.start_server(slow_reader, 7000)
        sender = await run(runtime, net_wasm, net, "bulk-send", "7000", str(nbytes))
        assert sender.check().facts["sent"] == str(nbytes)
        assert (
            digest.hexdigest()
            == sender.facts["sha256"]
            == hashlib.sha256(pattern(nbytes)).hexdigest()
        )
        # Never more than the high-water mark was buffered, and the writer did fill it.
        assert max(seen) <= high_water
        assert high_water in seen
        server.close()
        await server.wait_closed()
        assert_released(net)
    finally:
        await net.aclose()


async def test_peer_dropped_mid_stream_resets_the_writer(
    runtime: Runtime, net_wasm: Path, net: VirtualNetwork
) -> None:
    received = 0

    async def drop_after_64k(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
        nonlocal received
        while received < 64 * 1024:
            received += len(await reader.read(16 * 1024))
        writer.abort()

    server = await net.start_server(drop_after_64k, 7001)
    sender = await run(runtime, net_wasm, net, "bulk-send", "7001", str(8 * MIB))
    assert sender.trapped
    # Wherever the writer was when the peer went away (waiting for room,
    # between a poll and its send, between check-write and write), the first
    # output-stream call after the reset reports last-operation-failed, which
    # wasi-libc turns into EIO for send().
    assert "in mode_bulk_send\nOSError: [Errno 29] I/O error" in sender.stderr, sender.stderr
    assert received >= 64 * 1024
    server.close()
    await server.wait_closed()
    assert_released(net)


async def test_peer_dropped_mid_stream_fails_the_reader(
    runtime: Runtime, net_wasm: Path, net: VirtualNetwork
) -> None:
    server = Guest(runtime, net_wasm, net, "bulk-recv", "7002", role=SERVICE, name="recv")
    await server.wait_fact("listening")
    _, writer = await net.open_connection(7002)
    writer.write(pattern(MIB))
    writer.abort()  # gone mid-stream: a reset
    done = await server.finish()
    assert done.trapped
    # wasi-libc reports stream-error.last-operation-failed from recv() as EIO
    assert "OSError" in done.stderr and "I/O error" in done.stderr
    assert_released(net)


# --- UDP and names ------------------------------------------------------------------------
async def test_udp_echo(runtime: Runtime, net_wasm: Path, net: VirtualNetwork) -> None:
    server = Guest(runtime, net_wasm, net, "udp-echo-server", "5353", "1", role=SERVICE)
    assert await server.wait_fact("listening") == "5353"
    client = (await run(runtime, net_wasm, net, "udp-client", "5353", "a datagram")).check()
    assert client.facts == {"reply": "a datagram", "from_port": "5353", "match": "1"}
    assert (await server.finish()).check().facts["echoed"] == "1"
    stats = net.statistics()
    assert (stats.datagrams_delivered, stats.datagrams_dropped) == (2, 0)
    assert_released(net)


async def test_name_lookup(runtime: Runtime, net_wasm: Path) -> None:
    policy = NetworkPolicy(
        names={"dbpool": "127.0.0.1"},
        egress=(EgressRule("mariadb", 3306, target_host="127.0.0.1", target_port=3306),),
    )
    net = VirtualNetwork("names", policy)
    try:

        async def lookup(name: str) -> str:
            return (await run(runtime, net_wasm, net, "lookup", name)).check().facts["addrs"]

        assert await lookup("localhost") == "127.0.0.1,::1"
        assert await lookup("127.0.0.1") == "127.0.0.1"
        assert await lookup("dbpool") == "127.0.0.1"
        assert (await lookup("mariadb")).startswith("198.18.")  # only its egress rule uses it
        # Nothing else resolves: no host DNS unless the policy allows it (EAI_NONAME).
        assert await lookup("example.com") == f"gaierror:{socket.EAI_NONAME}"
        assert_released(net)
    finally:
        await net.aclose()


# --- egress and ingress ----------------------------------------------------------------
async def test_egress_needs_a_rule(runtime: Runtime, net_wasm: Path, net: VirtualNetwork) -> None:
    by_name = await run(runtime, net_wasm, net, "pymysql", "mariadb", "3306")
    assert by_name.trapped
    assert "OperationalError" in by_name.stderr and "mariadb" in by_name.stderr
    by_address = await run(runtime, net_wasm, net, "pymysql", "192.0.2.10", "3306")
    assert by_address.trapped
    assert "OperationalError" in by_address.stderr
    assert net.statistics().denied == 1
    assert net.statistics().egress_total == 0
    assert_released(net)


async def test_egress_rule_reaches_the_real_mariadb(runtime: Runtime, net_wasm: Path) -> None:
    rule = EgressRule("mariadb", 3306, target_host="127.0.0.1", target_port=3306)
    net = VirtualNetwork("db", NetworkPolicy(egress=(rule,)))
    try:
        result = (await run(runtime, net_wasm, net, "pymysql", "mariadb", "3306")).check()
        assert result.facts == {
            "select1": "1",
            "rows": "1:alpha;2:beta;3:gamma \u00e9",
            "roundtrip": "1",
            "closed": "1",
        }
        assert net.statistics().egress_total == 1
        assert await eventually(lambda: net.statistics().egress_active == 0)
        assert_released(net)
    finally:
        await net.aclose()


async def test_ingress_from_a_real_asyncio_client(runtime: Runtime, net_wasm: Path) -> None:
    net = VirtualNetwork("web", NetworkPolicy(ingress=(IngressRule(port=7, host_port=0),)))
    try:
        server = Guest(runtime, net_wasm, net, "echo-server", "7", "2", role=SERVICE)
        await server.wait_fact("listening")
        (ingress,) = await net.start_ingress()
        for message in (b"over real TCP", b"y" * 500_000):
            reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
            writer.write(message)
            writer.write_eof()
            assert await reader.read() == message
            writer.close()
            await writer.wait_closed()
        done = (await server.finish()).check()
        assert done.facts["served"] == "2"
        assert ingress.connections == 2
    finally:
        await net.aclose()
    assert net.statistics().ingress_servers == 0


# --- no network, private loopback -----------------------------------------------------------
async def test_no_network_denies_sockets_and_lookups(runtime: Runtime, net_wasm: Path) -> None:
    bind = (await run(runtime, net_wasm, None, "bind", "0", sockets=NO_NETWORK)).check()
    assert bind.facts == {"socket": "EACCES"}
    lookup = (await run(runtime, net_wasm, None, "lookup", "127.0.0.1", sockets=NO_NETWORK)).check()
    assert lookup.facts["addrs"].startswith("gaierror:")


async def test_a_guest_without_a_network_has_a_private_loopback(
    runtime: Runtime, net_wasm: Path
) -> None:
    """With ``WasiCtx.sockets = None`` asyncio works; fixed ports and egress do not."""
    alone = await run(runtime, net_wasm, None, "asyncio-clients", "7", "1")
    assert alone.trapped and "ConnectionRefusedError" in alone.stderr  # its loop started fine
    assert (await run(runtime, net_wasm, None, "bind", "0")).check().facts["bind"] == "ok"
    assert (await run(runtime, net_wasm, None, "bind", "80")).check().facts["bind"] == "EACCES"


# --- fabric exec ----------------------------------------------------------------------------
def fabric(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_exec_service_and_client(net_wasm: Path) -> None:
    p = fabric(
        "exec",
        "--service",
        f"{net_wasm} echo-server 7 1",
        str(net_wasm),
        "--",
        "echo-client",
        "7",
        "hi",
    )
    assert p.returncode == 0, p.stderr
    assert parse_facts(p.stdout)["echo"] == "hi"
    # The service's lines are prefixed with its name.
    assert f"[{net_wasm.name}] listening=7" in p.stdout.splitlines()


def test_exec_udp_service(net_wasm: Path) -> None:
    """A service that binds a UDP port counts as started, as one that listens on TCP."""
    service = f"{net_wasm} udp-echo-server 5353 1"
    p = fabric("exec", "--service", service, str(net_wasm), "--", "udp-client", "5353", "dgram")
    assert p.returncode == 0, p.stderr
    assert parse_facts(p.stdout)["reply"] == "dgram"


def test_exec_service_that_never_listens(net_wasm: Path) -> None:
    p = fabric(
        "exec", "--service", f"{net_wasm} lookup localhost", str(net_wasm), "--", "bind", "0"
    )
    assert p.returncode != 0
    assert "exited before it listened" in p.stderr


def test_exec_without_flags_has_loopback_only(net_wasm: Path) -> None:
    p = fabric("exec", str(net_wasm), "--", "bind", "0")
    assert (p.returncode, parse_facts(p.stdout)) == (0, {"bind": "ok", "port_nonzero": "1"})
    p = fabric("exec", str(net_wasm), "--", "bind", "8080")  # the main guest is a component
    assert (p.returncode, parse_facts(p.stdout)) == (0, {"bind": "EACCES"})


def test_exec_egress_rule(net_wasm: Path) -> None:
    p = fabric(
        "exec",
        "--egress",
        "mariadb:3306=127.0.0.1:3306",
        str(net_wasm),
        "--",
        "pymysql",
        "mariadb",
        "3306",
    )
    assert p.returncode == 0, p.stderr
    assert parse_facts(p.stdout)["roundtrip"] == "1"
    p = fabric("exec", str(net_wasm), "--", "pymysql", "mariadb", "3306")
    assert p.returncode == 134 and "OperationalError" in p.stderr


def test_exec_publish(net_wasm: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host_port = probe.getsockname()[1]
    cli_wasm = _cli_guest()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fabric.cli",
            "exec",
            "--service",
            f"{net_wasm} echo-server 7 1",
            "--publish",
            f"{host_port}:7",
            str(cli_wasm),
            "--",
            "sleep",
            "60000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sock = _connect_when_ready(host_port, proc)
        with sock:
            sock.sendall(b"published")
            sock.shutdown(socket.SHUT_WR)
            assert _recv_all(sock) == b"published"
    finally:
        proc.send_signal(signal.SIGINT)  # the main guest sleeps; stop it
        out, err = proc.communicate(timeout=TIMEOUT)
    assert f"[{net_wasm.name}] served=1" in out.splitlines(), err


def _cli_guest() -> Path:
    from fabric.build import build_python_guest

    return build_python_guest(GUESTS / "cli")


def _connect_when_ready(port: int, proc: subprocess.Popen[str]) -> socket.socket:
    import time

    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        except ConnectionRefusedError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"fabric exec never listened: {proc.communicate()}") from None
            time.sleep(0.05)


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --- the binding without a guest ------------------------------------------------------------
def wit_functions() -> dict[str, tuple[set[str], set[str]]]:
    """Per interface of wasi:sockets: its function names (as imported) and resources."""
    found: dict[str, tuple[set[str], set[str]]] = {}
    for path in sorted((WIT_DIR / "deps" / "sockets").glob("*.wit")):
        text = path.read_text()
        header = re.search(r"^interface ([a-z-]+) \{", text, re.MULTILINE)
        if header is None:
            continue
        funcs: set[str] = set()
        resources: set[str] = set()
        current: str | None = None
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("///"):
                continue
            if res := re.match(r"resource ([a-z-]+)\s*([{;])", stripped):
                resources.add(res[1])
                current = res[1] if res[2] == "{" else None
            elif stripped == "}":
                current = None
            elif func := re.match(r"%?([a-z-]+): func\(", stripped):
                funcs.add(f"[method]{current}.{func[1]}" if current else func[1])
        found[header[1]] = (funcs, resources)
    return found


def test_every_wit_function_is_provided() -> None:
    """Each function and resource of wasi:sockets@0.2 has a host implementation."""
    wit = wit_functions()
    assert set(wit) == {
        "network",
        "instance-network",
        "tcp",
        "tcp-create-socket",
        "udp",
        "udp-create-socket",
        "ip-name-lookup",
    }
    provided = {i.base.split("/", 1)[1]: i for i in interfaces("0.2.9")}
    assert set(provided) == set(wit)
    for name, (funcs, resources) in wit.items():
        extra = {"network-error-code"} if name == "network" else set()  # unstable in 0.2
        assert set(provided[name].funcs) == funcs | extra, name
        assert set(provided[name].resources) == resources, name
    assert {f"[method]tcp-socket.{m}" for m in TCP_METHODS} == wit["tcp"][0]
    assert {f"[method]udp-socket.{m}" for m in UDP_METHODS} <= wit["udp"][0]


def _stream_error(call: Callable[[], object]) -> tuple[str, str | None]:
    """The ``stream-error`` a binding call answers: its case and the error's code."""
    with pytest.raises(Err) as info:
        call()
    case, error = info.value.value
    return case, error.code if isinstance(error, IoError) else None


@pytest.mark.parametrize("when", ["waiting-for-room", "after-check-write"])
async def test_output_pollable_leaves_a_reset_to_the_next_write_call(
    net: VirtualNetwork, when: str
) -> None:
    """Sans-IO, on the binding's output stream: the peer resets while the guest
    waits for room, or between its check-write and its write. Its pollable is
    then ready, however often it is asked, and reports nothing; the next
    check-write or write reports ``last-operation-failed`` (connection-reset),
    then ``closed`` (wasmtime's order; wasi-libc maps the first to EIO for
    ``send()``, so the errno does not depend on whether the guest polled)."""
    guest = net.attach("guest", Role.SERVICE, max_sockets=4)
    listener = listen(guest)
    sock, _ins, outs = connect(guest, listener.local_address())
    _peer, _peer_in, peer_out = listener.accept()
    out = TcpOut(outs, TcpSocketResource(sock))
    pollable = out.subscribe()
    if when == "waiting-for-room":
        while room := out.check_write():
            out.write(bytes(room))
        assert not pollable.ready()
    else:
        assert out.check_write() > 0
    peer_out.end.abort()
    assert pollable.ready() and pollable.ready()
    assert poll_now([pollable]) == [0]
    first = out.check_write if when == "waiting-for-room" else lambda: out.write(b"x")
    assert _stream_error(first) == ("last-operation-failed", "connection-reset")
    assert pollable.ready()
    assert _stream_error(out.check_write) == ("closed", None)
    assert _stream_error(lambda: out.write(b"x")) == ("closed", None)


def test_network_error_code_only_for_socket_errors() -> None:
    assert network_error_code(IoError("reset", "connection-reset")) == "connection-reset"
    assert network_error_code(IoError("bad fd", "bad-descriptor")) is None
    assert network_error_code(IoError("no code")) is None


def test_addresses_round_trip() -> None:
    v6 = SocketAddress(IpAddressFamily.IPV6, (0, 0, 0, 0, 0, 0, 0, 1), 443, 7, 3)
    wit_v6 = ("ipv6", {"port": 443, "flow-info": 7, "address": v6.address, "scope-id": 3})
    assert from_address(v6) == wit_v6
    assert to_address(wit_v6) == v6
    v4 = SocketAddress(IpAddressFamily.IPV4, (127, 0, 0, 1), 80)
    assert to_address(from_address(v4)) == v4


def test_a_wrong_sockets_object_is_a_host_error() -> None:
    class Ctx:
        name = "guest"
        sockets = object()

    with pytest.raises(TypeError, match="GuestNetwork, None or NO_NETWORK"):
        guest_network(Ctx())
