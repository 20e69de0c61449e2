"""Egress targets named by host name: resolved once at load; refused connects stay refusals."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from fabric.cli import main
from fabric.net import ErrorCode, IpAddress, Role, SocketAddress, SocketError, TcpState
from fabric.runtime import Runtime
from fabric.workload import loads_manifest
from fabric.workload.egress import EgressResolveError
from fabric.workload.runtime import WorkloadRuntime


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workload(runtime: Runtime, tmp_path: Path, egress: str) -> WorkloadRuntime:
    text = f'[[workloads]]\nname = "w"\n[[workloads.egress]]\n{egress}\n'
    manifest = loads_manifest(text, path=str(tmp_path / "m.toml"), base_dir=str(tmp_path))
    return WorkloadRuntime(manifest.workloads[0], runtime)


async def test_host_name_is_resolved_once_at_load(runtime: Runtime, tmp_path: Path) -> None:
    wl = workload(runtime, tmp_path, 'dest = "db.internal"\nport = 5432\nto = "localhost:5432"')
    try:
        (rule,) = wl.network.policy.egress
        assert (rule.destination, rule.target_host, rule.target_port) == (
            "db.internal", "127.0.0.1", 5432,
        )  # fmt: skip
    finally:
        await wl.network.aclose()


async def test_refused_connect_through_a_host_name_is_connection_refused(
    runtime: Runtime, tmp_path: Path
) -> None:
    port = closed_port()
    wl = workload(runtime, tmp_path, f'dest = "db.internal"\nport = 80\nto = "localhost:{port}"')
    net = wl.network
    try:
        guest = net.attach("guest", Role.SERVICE)
        ip = net.resolver.synthetic("db.internal")
        sock = guest.create_tcp_socket(ip.family)
        sock.start_connect(guest, SocketAddress(ip.family, ip.address, 80))
        await asyncio.wait_for(sock.wait_ready(), 30)
        with pytest.raises(SocketError) as info:
            sock.finish_connect()
        assert info.value.code is ErrorCode.CONNECTION_REFUSED
        assert sock.state is TcpState.CLOSED
    finally:
        await net.aclose()


def test_unresolvable_target_is_refused_at_load(runtime: Runtime, tmp_path: Path) -> None:
    with pytest.raises(EgressResolveError) as info:
        workload(runtime, tmp_path, 'dest = "db"\nport = 5432\nto = "no-such-host.invalid:5432"')
    assert str(info.value).startswith(
        "egress target no-such-host.invalid:5432: cannot resolve 'no-such-host.invalid': "
    )


def test_fabric_exec_egress_to_an_unresolvable_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec", "--egress", "db:1=no-such-host.invalid:2", "/nonexistent.wasm"]) == 2
    _, err = capsys.readouterr()
    assert err.startswith(
        "fabric exec: --egress 'db:1=no-such-host.invalid:2': egress target "
        "no-such-host.invalid:2: cannot resolve 'no-such-host.invalid': "
    )
    assert err.count("\n") == 1


def test_ip_targets_are_used_as_given() -> None:
    from fabric.workload.egress import resolve_target

    assert resolve_target("127.0.0.1", 1) == "127.0.0.1"
    assert resolve_target("::1", 1) == "::1"
    assert IpAddress.parse(resolve_target("localhost", 1)).family is not None
