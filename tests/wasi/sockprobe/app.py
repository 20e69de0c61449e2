"""A wasi:cli/command guest calling wasi:sockets directly (no libc in between).

Usage: ``guest MODE [ARG]``. Every step prints one ``key=value`` line: the
result, or ``ERR:<error-code>`` (the WIT name; ``ERR:closed`` and
``ERR:failed`` for the two ``stream-error`` cases). Facts that depend on the
host (buffer sizes, ports) end in ``_bytes`` or ``_port``.

Modes:
  drop-parent KIND   drop a parent while a child lives (KIND: tcp-streams,
                     tcp-pollable, stream-pollable, udp-streams,
                     lookup-pollable) or, with KIND=ordered, children first
  udp-stream-twice   call udp-socket.stream while the previous streams live
  backpressure       fill a connection nobody reads, then drain it
  reset              the peer drops the connection with unread bytes
  shutdown           shutdown(send) / shutdown(receive) seen by both ends
  eof                the peer drops the connection gracefully
"""

import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import (
    instance_network,
    ip_name_lookup,
    network,
    streams,
    tcp,
    tcp_create_socket,
    udp_create_socket,
)

V4 = network.IpAddressFamily.IPV4
KEEP = []  # every resource stays referenced until it is dropped on purpose


def out(key, value):
    sys.stdout.write(f"{key}={value}\n")
    sys.stdout.flush()


def describe(exc):
    value = exc.value
    if isinstance(value, network.ErrorCode):
        return "ERR:" + value.name.lower().replace("_", "-")
    if isinstance(value, streams.StreamError_Closed):
        return "ERR:closed"
    if isinstance(value, streams.StreamError_LastOperationFailed):
        return "ERR:failed"
    return f"ERR:{value!r}"


def step(key, fn, show=lambda r: r):
    try:
        result = fn()
    except Err as e:
        out(key, describe(e))
        return None
    out(key, show(result))
    return result


def keep(*objs):
    KEEP.extend(objs)
    return objs[0] if len(objs) == 1 else objs


def drop(obj):
    obj.__exit__(None, None, None)


def v4(port=0):
    addr = network.Ipv4SocketAddress(port=port, address=(127, 0, 0, 1))
    return network.IpSocketAddress_Ipv4(addr)


def wait(pollable_source):
    p = pollable_source.subscribe()
    p.block()
    drop(p)


def until_ok(sock, fn):
    """Call a finish-* function until it stops saying would-block."""
    while True:
        try:
            return fn()
        except Err as e:
            if e.value != network.ErrorCode.WOULD_BLOCK:
                raise
        wait(sock)


class Pair:
    """A listener, a connected client and the accepted server side."""

    def __init__(self, listener, client, c_in, c_out, server, s_in, s_out):
        self.listener = listener
        self.client, self.c_in, self.c_out = client, c_in, c_out
        self.server, self.s_in, self.s_out = server, s_in, s_out


def pair(net):
    listener = keep(tcp_create_socket.create_tcp_socket(V4))
    listener.start_bind(net, v4())
    listener.finish_bind()
    listener.start_listen()
    listener.finish_listen()
    port = listener.local_address().value.port
    client = keep(tcp_create_socket.create_tcp_socket(V4))
    client.start_connect(net, v4(port))
    c_in, c_out = keep(*until_ok(client, client.finish_connect))
    server, s_in, s_out = keep(*until_ok(listener, listener.accept))
    return Pair(listener, client, c_in, c_out, server, s_in, s_out)


def read_all(stream, limit=1 << 24):
    data = b""
    while len(data) < limit:
        try:
            data += stream.blocking_read(65536)
        except Err as e:
            return data, describe(e)
    return data, "limit"


def write_all(stream, data):
    view = memoryview(data)
    while view:
        n = stream.check_write()
        if n == 0:
            wait(stream)
            continue
        stream.write(bytes(view[:n]))
        view = view[n:]
    stream.flush()


# --- modes ----------------------------------------------------------------------


def mode_drop_parent(net, kind):
    if kind in ("tcp-streams", "tcp-pollable", "stream-pollable", "ordered"):
        p = pair(net)
        client, c_in, c_out = p.client, p.c_in, p.c_out
        if kind == "tcp-streams":
            out("about_to_drop", "tcp-socket")
            drop(client)
        elif kind == "tcp-pollable":
            keep(client.subscribe())
            drop(c_in)
            drop(c_out)
            out("about_to_drop", "tcp-socket")
            drop(client)
        elif kind == "stream-pollable":
            keep(c_in.subscribe())
            out("about_to_drop", "input-stream")
            drop(c_in)
        else:
            pollable = client.subscribe()
            drop(pollable)
            drop(c_in)
            drop(c_out)
            drop(client)
            for obj in (p.s_in, p.s_out, p.server, p.listener):
                drop(obj)
    elif kind == "udp-streams":
        sock = keep(udp_create_socket.create_udp_socket(V4))
        sock.start_bind(net, v4())
        sock.finish_bind()
        keep(*sock.stream(None))
        out("about_to_drop", "udp-socket")
        drop(sock)
    elif kind == "lookup-pollable":
        stream = keep(ip_name_lookup.resolve_addresses(net, "localhost"))
        keep(stream.subscribe())
        out("about_to_drop", "resolve-address-stream")
        drop(stream)
    else:
        out("error", f"unknown kind {kind}")
        return
    out("dropped", "ok")


def mode_udp_stream_twice(net, _):
    sock = keep(udp_create_socket.create_udp_socket(V4))
    sock.start_bind(net, v4())
    sock.finish_bind()
    first_in, first_out = sock.stream(None)
    drop(first_in)
    drop(first_out)
    keep(*sock.stream(None))
    out("after_drop", "ok")
    out("about_to_call", "stream")
    keep(*sock.stream(None))
    out("second", "ok")


def mode_backpressure(net, _):
    p = pair(net)
    total = 0
    while True:
        n = p.c_out.check_write()
        if n == 0:
            break
        chunk = min(n, 65536)
        p.c_out.write(b"x" * chunk)
        total += chunk
        if total > 64 << 20:
            break
    out("filled", int(total > 0))
    out("filled_bytes", total)
    out("check_write_when_full", p.c_out.check_write())
    pollable = p.c_out.subscribe()
    out("ready_when_full", int(pollable.ready()))
    drained = 0
    while not pollable.ready():
        data = p.s_in.blocking_read(65536)
        drained += len(data)
    drop(pollable)
    out("ready_after_drain", 1)
    out("write_again", int(p.c_out.check_write() > 0))
    drop(p.c_out)  # the client is done writing; the server reads the rest
    p.client.shutdown(tcp.ShutdownType.SEND)
    rest, end = read_all(p.s_in)
    out("received_all", int(drained + len(rest) == total))
    out("then", end)


def mode_reset(net, _):
    p = pair(net)
    write_all(p.c_out, b"unread bytes")
    write_all(p.s_out, b"delivered")
    # The server side goes away without reading: a reset, as the kernel sends one.
    for obj in (p.s_in, p.s_out, p.server):
        drop(obj)
    data, end = read_all(p.c_in)
    out("client_read", data.decode())
    out("client_read_end", end)
    step("client_read_again", lambda: p.c_in.read(10))
    step("client_check_write", lambda: p.c_out.check_write())
    step("client_check_write_again", lambda: p.c_out.check_write())


def mode_eof(net, _):
    p = pair(net)
    write_all(p.s_out, b"goodbye")
    for obj in (p.s_in, p.s_out, p.server):
        drop(obj)
    data, end = read_all(p.c_in)
    out("client_read", data.decode())
    out("client_read_end", end)
    step("client_read_again", lambda: p.c_in.read(10))


def mode_shutdown(net, _):
    p = pair(net)
    write_all(p.c_out, b"before")
    step("shutdown_send", lambda: p.client.shutdown(tcp.ShutdownType.SEND), lambda r: "ok")
    step("shutdown_send_again", lambda: p.client.shutdown(tcp.ShutdownType.SEND), lambda r: "ok")
    step("check_write_after", lambda: p.c_out.check_write(), lambda r: "ok")
    data, end = read_all(p.s_in)
    out("server_read", data.decode())
    out("server_read_end", end)
    write_all(p.s_out, b"reply")
    reply = p.c_in.blocking_read(100)
    out("client_still_reads", reply.decode())
    step("shutdown_receive", lambda: p.server.shutdown(tcp.ShutdownType.RECEIVE), lambda r: "ok")
    step("server_read_after", lambda: p.s_in.read(10))
    step("shutdown_both", lambda: p.client.shutdown(tcp.ShutdownType.BOTH), lambda r: "ok")
    step("client_read_after_both", lambda: p.c_in.read(10))


MODES = {
    "drop-parent": mode_drop_parent,
    "udp-stream-twice": mode_udp_stream_twice,
    "backpressure": mode_backpressure,
    "reset": mode_reset,
    "eof": mode_eof,
    "shutdown": mode_shutdown,
}


class Run(exports.Run):
    def run(self) -> None:
        argv = sys.argv[1:]
        mode = MODES.get(argv[0] if argv else "")
        if mode is None:
            out("error", f"unknown mode {argv!r}")
            sys.exit(2)
        mode(instance_network.instance_network(), argv[1] if len(argv) > 1 else "")
        sys.stdout.flush()
