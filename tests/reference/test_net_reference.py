"""The ``net`` guest under the wasmtime CLI with real loopback sockets."""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import pytest

from tests.reference.cases import NET_CASES, Case, assert_facts
from tests.reference.guests import guest_path
from tests.reference.wasmtime_cli import run_guest, start_guest

pytestmark = pytest.mark.slow


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("case", NET_CASES, ids=lambda case: case.id)
def test_net_case(case: Case) -> None:
    result = run_guest(guest_path(case.guest), *case.args, stdin=case.stdin, env=case.env)
    assert result.returncode == case.returncode, result.stderr
    assert_facts(case, result.facts)


def test_guest_echo_pair(net_wasm: Path) -> None:
    """A guest echo server serves guest clients: plain, half-closing and asyncio."""
    with start_guest(net_wasm, "echo-server", "0", "18") as server:
        port = server.wait_fact("listening")
        client = run_guest(net_wasm, "echo-client", port, "hello through wasmtime").check()
        assert client.facts == {
            "echo": "hello through wasmtime",
            "echo_len": "22",
            "match": "1",
        }
        half = run_guest(net_wasm, "half-close", port).check()
        assert half.facts == {"send_after_shutdown": "ESHUTDOWN", "received": "part1", "eof": "1"}
        many = run_guest(net_wasm, "asyncio-clients", port, "16").check()
        assert many.facts == {"clients": "16", "ok": "16"}
        done = server.finish()
    assert done.returncode == 0, done.stderr
    echoed = 22 + 5 + sum(len(f"client-{i}-") * (i + 1) for i in range(16))
    assert done.facts["served"] == "18"
    assert done.facts["echoed_bytes"] == str(echoed)


def test_guest_server_host_client(net_wasm: Path) -> None:
    with start_guest(net_wasm, "echo-server", "0", "2") as server:
        port = int(server.wait_fact("listening"))
        for message in (b"from the host", b"x" * 300_000):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(message)
                sock.shutdown(socket.SHUT_WR)
                received = _recv_all(sock)
            assert received == message
        done = server.finish()
    assert done.facts["served"] == "2"


def test_guest_client_host_server(net_wasm: Path, host_echo_server: int) -> None:
    result = run_guest(net_wasm, "echo-client", str(host_echo_server), "to the host").check()
    assert result.facts == {"echo": "to the host", "echo_len": "11", "match": "1"}


def test_bulk_transfer_between_guests(net_wasm: Path) -> None:
    nbytes = 8 << 20
    with start_guest(net_wasm, "bulk-recv", "0") as receiver:
        port = receiver.wait_fact("listening")
        sender = run_guest(net_wasm, "bulk-send", port, str(nbytes)).check()
        done = receiver.finish()
    assert done.returncode == 0, done.stderr
    assert sender.facts["sent"] == str(nbytes)
    assert done.facts["received"] == str(nbytes)
    assert done.facts["sha256"] == sender.facts["sha256"]
    assert float(sender.facts["mib_per_s"]) > 0


def test_udp_echo_between_guests(net_wasm: Path) -> None:
    with start_guest(net_wasm, "udp-echo-server", "0", "1") as server:
        port = server.wait_fact("listening")
        client = run_guest(net_wasm, "udp-client", port, "a datagram").check()
        done = server.finish()
    assert client.facts["reply"] == "a datagram"
    assert client.facts["from_port"] == port
    assert client.facts["match"] == "1"
    assert done.facts["echoed"] == "1"


def test_bind_collides_with_host_listener(net_wasm: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_guest(net_wasm, "bind", str(port)).check()
    assert result.facts == {"bind": "EADDRINUSE"}


def test_connect_refused_without_listener(net_wasm: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_guest(net_wasm, "echo-client", str(port), "nobody")
    assert result.trapped
    assert "ConnectionRefusedError" in result.stderr


def test_lookup_of_a_literal_needs_no_dns(net_wasm: Path) -> None:
    result = run_guest(net_wasm, "lookup", "127.0.0.1").check()
    assert result.facts == {"addrs": "127.0.0.1"}


def test_lookup_denied_without_permission(net_wasm: Path) -> None:
    """Without allow-ip-name-lookup even a literal fails: getaddrinfo always asks."""
    result = run_guest(net_wasm, "lookup", "127.0.0.1", name_lookup=False).check()
    assert result.facts["addrs"].startswith("gaierror:")


def test_sockets_denied_without_network(net_wasm: Path) -> None:
    result = run_guest(net_wasm, "bind", "0", network=False).check()
    assert result.facts == {"socket": "EACCES"}


def test_pymysql_round_trip(net_wasm: Path) -> None:
    result = run_guest(net_wasm, "pymysql", "127.0.0.1", "3306").check()
    assert result.facts == {
        "select1": "1",
        "rows": "1:alpha;2:beta;3:gamma \u00e9",
        "roundtrip": "1",
        "closed": "1",
    }


def test_bulk_payload_is_the_documented_pattern(net_wasm: Path) -> None:
    """bulk-send's payload is reproducible on the host (for host-side peers)."""
    nbytes = 100_000
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)
        port = listener.getsockname()[1]
        received = bytearray()

        def accept() -> None:
            conn, _ = listener.accept()
            with conn:
                while data := conn.recv(65536):
                    received.extend(data)

        thread = threading.Thread(target=accept)
        thread.start()
        sender = run_guest(net_wasm, "bulk-send", str(port), str(nbytes)).check()
        thread.join(timeout=60)
    block = hashlib.sha256(b"fabric-bulk").digest() * 2048
    expected = (block * (nbytes // len(block) + 1))[:nbytes]
    assert bytes(received) == expected
    assert sender.facts["sha256"] == hashlib.sha256(expected).hexdigest()
