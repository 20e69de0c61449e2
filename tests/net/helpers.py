"""Shared helpers for the virtual network tests (sans-IO drivers)."""

from __future__ import annotations

from fabric.net import (
    GuestNetwork,
    IpAddressFamily,
    SocketAddress,
    StreamClosed,
    TcpInputStream,
    TcpOutputStream,
    TcpSocket,
)

V4 = IpAddressFamily.IPV4
V6 = IpAddressFamily.IPV6


def addr(host: str, port: int) -> SocketAddress:
    return SocketAddress.parse(host, port)


def listen(guest: GuestNetwork, port: int = 0, host: str = "127.0.0.1") -> TcpSocket:
    """A listening socket, driven through the WIT call sequence."""
    family = addr(host, port).family
    sock = guest.create_tcp_socket(family)
    sock.start_bind(guest, addr(host, port))
    sock.finish_bind()
    sock.start_listen()
    sock.finish_listen()
    return sock


def connect(
    guest: GuestNetwork, target: SocketAddress
) -> tuple[TcpSocket, TcpInputStream, TcpOutputStream]:
    """A connected client socket (loopback connects complete at once)."""
    sock = guest.create_tcp_socket(target.family)
    sock.start_connect(guest, target)
    ins, outs = sock.finish_connect()
    return sock, ins, outs


def read_all(ins: TcpInputStream, limit: int = 1 << 20) -> bytes:
    """Everything buffered now (no waiting), stopping quietly at EOF."""
    out = bytearray()
    try:
        while data := ins.read(limit):
            out += data
    except StreamClosed:
        pass
    return bytes(out)
