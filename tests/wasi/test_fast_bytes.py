"""``fast_bytes``: the net guest composed to move its stream bytes as latin-1.

The composed guest (``fabric.compose``) moves its socket bytes through
``fabric:io/latin1`` instead of ``wasi:io/streams``' ``list<u8>`` functions;
every byte value must still arrive intact, guest to guest and guest to host.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fabric.compose import LATIN1_IMPORT, build_fast_bytes_guest
from fabric.runtime import Runtime
from tests.wasi.netlib import pattern, running, service, workload

EVERY_BYTE = bytes(range(256))


def fast(wl: dict[str, Any]) -> dict[str, Any]:
    """``wl`` with ``fast_bytes = true`` on its client component and every service."""
    for member in (*wl["components"], *wl["services"]):
        member["fast_bytes"] = True
    return wl


def test_the_composed_guest_imports_the_guests_imports_and_latin1(
    runtime: Runtime, net_wasm: Path
) -> None:
    composed = runtime.load(build_fast_bytes_guest(net_wasm))
    plain = runtime.load(net_wasm)
    assert set(composed.imports) == {*plain.imports, LATIN1_IMPORT}
    assert set(composed.imports[LATIN1_IMPORT]) == {
        "read",
        "blocking-read",
        "write",
        "blocking-write-and-flush",
    }
    assert set(composed.exports) == set(plain.exports)
    # built once: the second call is the cached file
    assert build_fast_bytes_guest(net_wasm) == build_fast_bytes_guest(net_wasm)


async def test_every_byte_value_crosses_a_composed_echo_server(
    runtime: Runtime, net_wasm: Path
) -> None:
    """A host peer sends 1 MiB holding every byte value to the composed echo
    server and reads it back: the server's reads and writes go through fabric:io/latin1."""
    payload = EVERY_BYTE * 4096
    wl = fast(workload("fast", net_wasm, services=[
        service("echo", net_wasm, "echo-server", "7", ports=[7], restart="always")
    ]))  # fmt: skip
    async with running(runtime, wl) as fab:
        await fab.wait_fact("fast", "echo", "listening")
        reader, writer = await fab.network("fast").open_connection(7)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        back = await reader.read()
        writer.close()
    assert len(back) == len(payload)
    assert back == payload


async def test_composed_guests_echo_and_stream_bulk_intact(
    runtime: Runtime, net_wasm: Path
) -> None:
    """Guest to guest, both composed: a bulk echo comes back whole, a bulk
    transfer reaches the sink with the sender's digest, and a message of every
    code point 1-255 (sent UTF-8 encoded) is echoed byte for byte."""
    nbytes = 4 << 20
    wl = fast(workload("fast", net_wasm, services=[
        service("echo", net_wasm, "echo-server", "7", ports=[7], restart="always"),
        service("sink", net_wasm, "bulk-recv", "9001", ports=[9001]),
    ]))  # fmt: skip
    message = "".join(map(chr, range(1, 256))) * 64
    async with running(runtime, wl) as fab:
        echoed = (await fab.invoke("fast", "bulk-send", "7", str(nbytes))).check()
        assert echoed.facts["received_back"] == echoed.facts["sent"] == str(nbytes)
        sent = (await fab.invoke("fast", "bulk-send", "9001", str(nbytes))).check()
        got = await fab.service_facts("fast", "sink")
        small = (await fab.invoke("fast", "echo-client", "7", message)).check()
    assert got["received"] == str(nbytes)
    assert got["sha256"] == sent.facts["sha256"] == hashlib.sha256(pattern(nbytes)).hexdigest()
    assert small.facts["match"] == "1"
    assert small.facts["echo_len"] == str(len(message.encode()))


async def test_a_dropped_peer_reaches_the_composed_guest_as_without_it(
    runtime: Runtime, net_wasm: Path
) -> None:
    """The host's stream errors reach the composed guest unchanged: a reset peer is
    EIO for send() and for recv(), as for the guest on its own
    (``test_net_guests.test_peer_dropped_mid_stream``)."""

    async def drop_after_64k(reader: Any, writer: Any) -> None:
        await reader.readexactly(65536)
        writer.abort()

    async def reply_then_drop(reader: Any, writer: Any) -> None:
        await reader.read()
        writer.write(b"partial")
        await writer.drain()
        writer.abort()

    async with running(runtime, fast(workload("drop", net_wasm))) as fab:
        net = fab.network("drop")
        servers = [
            await net.start_server(drop_after_64k, 9100),
            await net.start_server(reply_then_drop, 9101),
        ]
        try:
            writer = await fab.invoke("drop", "bulk-send", "9100", str(8 << 20))
            reader = await fab.invoke("drop", "echo-client", "9101", "hello?")
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()
    assert writer.trapped
    assert "in mode_bulk_send\nOSError: [Errno 29] I/O error" in writer.stderr, writer.stderr
    assert reader.trapped
    assert "OSError: [Errno 29] I/O error" in reader.stderr
