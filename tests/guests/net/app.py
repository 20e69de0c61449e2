"""A wasi:cli/command guest exercising wasi:sockets through Python's socket module.

Usage: ``guest MODE [ARGS...]``. Every mode prints ``key=value`` lines and
flushes. Errors are printed by errno *name*: inside a guest the numbers are
WASI's, not the host's.

Conformance modes (the behaviours wasmtime's p2 socket test programs check,
as far as Python's socket module exposes them):
  tcp-states, tcp-bind, tcp-connect, tcp-sample, tcp-misc, udp-sample,
  udp-states, ip-name-lookup

Modes for virtual-network tests:
  echo-server PORT [N]       serve N connections concurrently (0: forever)
  echo-client PORT MSG       connect, send, shutdown(SHUT_WR), read all
  half-close PORT            send, half-close, keep reading the peer
  bulk-send PORT NBYTES [HOST]  send NBYTES of a fixed pattern, half-close, read to EOF
  bulk-recv PORT             accept one connection, read to EOF
  udp-echo-server PORT [N]   echo N datagrams (0: forever)
  udp-client PORT MSG        send a datagram, wait for the reply
  lookup NAME                resolve NAME
  bind PORT [HOST]           bind and listen, or print the errno name
  asyncio-clients PORT N     N concurrent asyncio connections to an echo server
  pymysql HOST PORT          PyMySQL round trip against MariaDB
  rtt HOST PORT N            N one-byte round trips; elapsed_us times the loop inside the guest
  pymysql-pooled HOST PORT USER PASSWORD DB TABLE
                             PyMySQL through a transaction-pooling server (the
                             dbpool MySQL front door): no session state kept
                             between statements outside a transaction

A server prints ``listening=PORT`` (the real port when PORT is 0) as soon as
it accepts connections.
"""

# Only modules imported at build time exist at run time: import everything here.
import asyncio
import encodings.idna  # noqa: F401  (getaddrinfo needs it)
import errno
import hashlib
import selectors
import socket
import sys
import time

import pymysql
import pymysql.cursors
from wit_world import exports

LOOPBACK = "127.0.0.1"


def out(key: str, value: object) -> None:
    sys.stdout.write(f"{key}={value}\n")
    sys.stdout.flush()


def err_name(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"gaierror:{exc.args[0]}"
    if isinstance(exc, TimeoutError) and getattr(exc, "errno", None) is None:
        return "timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def attempt(key: str, fn, show=None) -> object:
    """Run ``fn``; print ``key=ok`` (or ``ok:<show(result)>``) or the errno name."""
    try:
        result = fn()
    except (OSError, ValueError, OverflowError, TypeError) as exc:
        out(key, err_name(exc))
        return None
    out(key, "ok" if show is None else f"ok:{show(result)}")
    return result


def v4(addr) -> str:
    return f"{addr[0]}:{addr[1]}"


def tcp(family: int = socket.AF_INET) -> socket.socket:
    return socket.socket(family, socket.SOCK_STREAM)


def listener(host: str = LOOPBACK, port: int = 0, family: int = socket.AF_INET) -> socket.socket:
    sock = tcp(family)
    sock.bind((host, port))
    sock.listen(32)
    return sock


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def sockopts(prefix: str, sock: socket.socket) -> None:
    """Socket options are accepted in every state (p2_tcp_states)."""
    opts = [
        ("keepalive", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0),
        ("keepidle", socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1),
        ("keepintvl", socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1),
        ("keepcnt", socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 1),
        ("ttl", socket.IPPROTO_IP, socket.IP_TTL, 255),
        ("rcvbuf", socket.SOL_SOCKET, socket.SO_RCVBUF, 16000),
        ("sndbuf", socket.SOL_SOCKET, socket.SO_SNDBUF, 16000),
    ]
    for name, level, opt, value in opts:
        attempt(f"{prefix}.get_{name}", lambda: sock.getsockopt(level, opt))
        attempt(f"{prefix}.set_{name}", lambda: sock.setsockopt(level, opt, value))


# --- conformance modes ----------------------------------------------------


def mode_tcp_states(args: list[str]) -> None:
    # unbound
    sock = tcp()
    attempt("unbound.getsockname", sock.getsockname)
    attempt("unbound.getpeername", sock.getpeername)
    attempt("unbound.accept", sock.accept)
    attempt("unbound.shutdown", lambda: sock.shutdown(socket.SHUT_RDWR))
    out("unbound.family", sock.family.name)
    out("unbound.type", sock.type.name)
    sockopts("unbound", sock)
    sock.close()
    # POSIX binds implicitly on listen(); WASI's start-listen needs a bound socket.
    sock = tcp()
    attempt("unbound.listen", lambda: sock.listen(1))
    attempt("unbound.listen.getsockname", sock.getsockname, lambda a: a[0])
    sock.close()

    # bound
    sock = tcp()
    sock.bind((LOOPBACK, 0))
    attempt("bound.getsockname", sock.getsockname, lambda a: f"{a[0]}:nonzero={int(a[1] != 0)}")
    attempt("bound.bind_again", lambda: sock.bind((LOOPBACK, 0)))
    attempt("bound.getpeername", sock.getpeername)
    attempt("bound.accept", sock.accept)
    attempt("bound.shutdown", lambda: sock.shutdown(socket.SHUT_RDWR))
    sockopts("bound", sock)
    sock.close()

    # listening
    sock = listener()
    addr = sock.getsockname()
    attempt("listening.getsockname", sock.getsockname, lambda a: f"{a[0]}:nonzero={int(a[1] != 0)}")
    attempt("listening.bind_again", lambda: sock.bind((LOOPBACK, 0)))
    attempt("listening.listen_again", lambda: sock.listen(16))
    attempt("listening.getpeername", sock.getpeername)
    attempt("listening.shutdown", lambda: sock.shutdown(socket.SHUT_RDWR))
    out("listening.accepting", sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    sockopts("listening", sock)

    # connected
    client = tcp()
    client.connect(addr)
    server, peer = sock.accept()
    out("connected.peer_matches", int(peer == client.getsockname()))
    out("connected.local_matches", int(server.getsockname() == addr))
    out("connected.remote_matches", int(client.getpeername() == addr))
    attempt("connected.bind", lambda: client.bind((LOOPBACK, 0)))
    attempt("connected.connect_again", lambda: client.connect(addr))
    attempt("connected.listen", lambda: client.listen(1))
    attempt("connected.accept", client.accept)
    out("connected.accepting", client.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    sockopts("connected", client)
    attempt("connected.shutdown_wr", lambda: client.shutdown(socket.SHUT_WR))
    attempt("connected.shutdown_wr_again", lambda: client.shutdown(socket.SHUT_WR))
    out("connected.peer_eof", int(server.recv(10) == b""))
    server.close()
    client.close()
    sock.close()


def mode_tcp_bind(args: list[str]) -> None:
    for host in (LOOPBACK, "0.0.0.0"):
        sock = tcp()
        sock.bind((host, 0))
        got = sock.getsockname()
        out(f"ephemeral.{host}", f"ip={got[0]} nonzero={int(got[1] != 0)}")
        sock.close()

    for host in (LOOPBACK, "0.0.0.0"):
        # A specific port: take a free one, release it, bind it explicitly.
        probe = tcp()
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
        probe.close()
        sock = tcp()
        attempt(f"specific.{host}", lambda: sock.bind((host, port)))
        out(f"specific.{host}.same_port", int(sock.getsockname()[1] == port))
        sock.close()

    for host in (LOOPBACK, "0.0.0.0"):
        first = listener(host)
        port = first.getsockname()[1]
        second = tcp()
        attempt(f"addrinuse.{host}", lambda: second.bind((host, port)))
        second.close()
        first.close()

    # Only bound (not listening): wasmtime sets SO_REUSEADDR, so this succeeds.
    first = tcp()
    first.bind((LOOPBACK, 0))
    port = first.getsockname()[1]
    second = tcp()
    attempt("rebind_bound_only", lambda: second.bind((LOOPBACK, port)))
    second.close()
    first.close()

    # SO_REUSEADDR: a closed listener's port is free again despite TIME_WAIT.
    first = listener()
    port = first.getsockname()[1]
    client = tcp()
    client.connect((LOOPBACK, port))
    conn, _ = first.accept()
    conn.sendall(b"\0" * 10)
    conn.close()
    first.close()
    again = tcp()
    attempt("reuseaddr.bind", lambda: again.bind((LOOPBACK, port)))
    attempt("reuseaddr.listen", lambda: again.listen(1))
    again.close()
    client.close()

    sock = tcp()
    attempt("addrnotavail", lambda: sock.bind(("192.0.2.0", 0)))
    sock.close()
    for name, host in (("broadcast", "255.255.255.255"), ("multicast", "224.254.0.0")):
        sock = tcp()
        attempt(f"nonunicast.{name}", lambda: sock.bind((host, 0)))
        sock.close()

    if socket.has_ipv6:
        sock = tcp(socket.AF_INET6)
        attempt("v6.ephemeral", lambda: sock.bind(("::1", 0)))
        sock.close()
        sock = tcp(socket.AF_INET6)
        attempt("v6.multicast", lambda: sock.bind(("ff00::", 0)))
        sock.close()
        sock = tcp(socket.AF_INET6)
        attempt("v6.mapped_v4", lambda: sock.bind(("::ffff:127.0.0.1", 0)))
        sock.close()


def mode_tcp_connect(args: list[str]) -> None:
    some_port = 47
    cases = [
        ("unspecified", "0.0.0.0", some_port),
        ("port0", LOOPBACK, 0),
        ("broadcast", "255.255.255.255", some_port),
        ("multicast", "224.254.0.0", some_port),
    ]
    for name, host, port in cases:
        sock = tcp()
        attempt(f"connect.{name}", lambda: sock.connect((host, port)))
        sock.close()

    # Nobody listens on a port we just released.
    probe = tcp()
    probe.bind((LOOPBACK, 0))
    port = probe.getsockname()[1]
    probe.close()
    sock = tcp()
    attempt("connect.refused", lambda: sock.connect((LOOPBACK, port)))
    sock.close()
    sock = tcp()
    out("connect_ex.refused", errno.errorcode.get(sock.connect_ex((LOOPBACK, port)), "?"))
    sock.close()

    server = listener()
    addr = server.getsockname()
    client = tcp()
    client.bind((LOOPBACK, 0))
    bound = client.getsockname()
    attempt("connect.explicit_bind", lambda: client.connect(addr))
    out("connect.explicit_bind.kept_port", int(client.getsockname() == bound))
    client.close()

    client = tcp()
    attempt("connect.implicit_bind", lambda: client.connect(addr))
    local = client.getsockname()
    out("connect.implicit_bind.local", f"{local[0]}:nonzero={int(local[1] != 0)}")
    client.close()
    server.close()

    if socket.has_ipv6:
        v6 = tcp(socket.AF_INET6)
        attempt("v6.connect_unspecified", lambda: v6.connect(("::", some_port)))
        v6.close()
        v6 = tcp(socket.AF_INET6)
        attempt("v6.connect_multicast", lambda: v6.connect(("ff00::", some_port)))
        v6.close()
        server = listener()
        port = server.getsockname()[1]
        v6 = tcp(socket.AF_INET6)
        attempt("v6.connect_mapped_v4", lambda: v6.connect(("::ffff:127.0.0.1", port)))
        v6.close()
        server.close()


def mode_tcp_sample(args: list[str]) -> None:
    first, second = b"Hello, world!", b"Greetings, planet!"
    for family, host in ((socket.AF_INET, LOOPBACK), (socket.AF_INET6, "::1")):
        tag = "v4" if family == socket.AF_INET else "v6"
        try:
            server = listener(host, 0, family)
        except OSError as exc:
            out(f"{tag}.listen", err_name(exc))
            continue
        addr = server.getsockname()[:2]
        for index, message in enumerate((first, second)):
            client = tcp(family)
            client.connect(addr)
            client.sendall(b"")
            client.sendall(message)
            client.close()
            conn, _ = server.accept()
            out(f"{tag}.{index}.empty_read", int(conn.recv(0) == b""))
            out(f"{tag}.{index}.received", recv_exactly(conn, len(message)).decode())
            out(f"{tag}.{index}.then_eof", int(conn.recv(10) == b""))
            conn.close()
        server.close()


def mode_tcp_misc(args: list[str]) -> None:
    """Facts listed in GUESTS.md item 9, plus blocking-mode behaviours."""
    server = listener()
    addr = server.getsockname()
    out("rcvbuf_positive", int(server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 0))
    client = tcp()
    client.settimeout(5)
    client.connect(addr)
    conn, _ = server.accept()
    client.settimeout(0.2)
    try:
        client.recv(10)
        out("recv_timeout", "data")
    except TimeoutError as exc:
        out("recv_timeout", err_name(exc))
    client.settimeout(None)
    conn.sendall(b"abc")
    out("after_timeout_recv", recv_exactly(client, 3).decode())
    # Non-blocking reads with nothing pending.
    client.setblocking(False)
    try:
        client.recv(10)
        out("nonblocking_recv", "data")
    except BlockingIOError as exc:
        out("nonblocking_recv", err_name(exc))
    client.setblocking(True)
    # Non-blocking connect, then wait for writability before asking anything.
    nb = tcp()
    nb.setblocking(False)
    rc = nb.connect_ex(addr)
    # 0 when loopback completes at once, EINPROGRESS otherwise: both are fine.
    out("nonblocking_connect_started", int(rc in (0, errno.EINPROGRESS)))
    sel = selectors.DefaultSelector()
    sel.register(nb, selectors.EVENT_WRITE)
    ready = sel.select(timeout=5)
    out("nonblocking_connect_ready", len(ready))
    out("nonblocking_connect_soerror", nb.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    out("nonblocking_connect_peer", int(nb.getpeername() == addr))
    sel.close()
    accepted, _ = server.accept()
    # The peer closes: our reads see EOF, and repeated reads stay at EOF.
    accepted.close()
    nb.setblocking(True)
    out("eof_read", int(nb.recv(10) == b""))
    out("eof_read_again", int(nb.recv(10) == b""))
    nb.close()
    # shutdown(SHUT_RD) leaves the write side working.
    client.shutdown(socket.SHUT_RD)
    client.sendall(b"after-shut-rd")
    out("shut_rd_then_write", recv_exactly(conn, 13).decode())
    client.close()
    out("peer_eof_after_close", int(recv_all(conn) == b""))
    conn.close()
    # Many sockets at once.
    socks = [tcp() for _ in range(64)]
    out("sockets_64", len(socks))
    for s in socks:
        s.close()
    server.close()


def mode_udp_sample(args: list[str]) -> None:
    for family, host, any_host in (
        (socket.AF_INET, LOOPBACK, "0.0.0.0"),
        (socket.AF_INET6, "::1", "::"),
    ):
        tag = "v4" if family == socket.AF_INET else "v6"
        server = socket.socket(family, socket.SOCK_DGRAM)
        try:
            server.bind((host, 0))
        except OSError as exc:
            out(f"{tag}.bind", err_name(exc))
            server.close()
            continue
        server.settimeout(5)
        addr = server.getsockname()[:2]
        client = socket.socket(family, socket.SOCK_DGRAM)
        client.bind((any_host, 0))
        client.connect(addr)
        client.send(b"")
        # wasmtime's test names the remote again on a connected socket; wasi-libc
        # refuses that (EISCONN), so the datagram goes out with send().
        attempt(f"{tag}.sendto_connected", lambda: client.sendto(b"x", addr))
        client.send(b"Hello, world!")
        client_addr = client.getsockname()[:2]
        out(f"{tag}.client_local_is_loopback", int(client_addr[0] == host))
        for index in range(2):
            data, sender = server.recvfrom(100)
            out(f"{tag}.{index}.data", data.decode() or "<empty>")
            out(f"{tag}.{index}.from_client", int(sender[:2] == client_addr))
        client.close()
        other = socket.socket(family, socket.SOCK_DGRAM)
        other.bind((any_host, 0))
        other.sendto(b"Greetings, planet!", addr)
        data, _ = server.recvfrom(100)
        out(f"{tag}.2.data", data.decode())
        other.close()
        server.close()


def mode_udp_states(args: list[str]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attempt("unbound.getsockname", sock.getsockname)
    attempt("unbound.getpeername", sock.getpeername)
    attempt("bind", lambda: sock.bind((LOOPBACK, 0)))
    attempt("bound.getsockname", sock.getsockname, lambda a: f"{a[0]}:nonzero={int(a[1] != 0)}")
    attempt("bound.bind_again", lambda: sock.bind((LOOPBACK, 0)))
    attempt("bound.getpeername", sock.getpeername)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attempt("addrinuse", lambda: other.bind(sock.getsockname()))
    other.close()
    attempt("connect.port0", lambda: sock.connect((LOOPBACK, 0)))
    attempt("connect.unspecified", lambda: sock.connect(("0.0.0.0", 47)))
    attempt("connect", lambda: sock.connect((LOOPBACK, 47)))
    attempt("connected.getpeername", sock.getpeername, v4)
    sock.settimeout(0.2)
    try:
        sock.recv(10)
        out("recv_timeout", "data")
    except OSError as exc:
        out("recv_timeout", err_name(exc))
    sock.close()


def mode_ip_name_lookup(args: list[str]) -> None:
    names = [
        "localhost",
        "0.0.0.0",
        "127.0.0.1",
        "192.0.2.0",
        "::",
        "::1",
        "2001:0db8:0:0:0:0:0:0",
        "dead:beef::",
        "DEAD:BEEF::0",
        " ",
        "a.b<&>",
        "127.0.0.1:80",
        "http://example.com/",
        "nonexistent.invalid",
    ]
    for name in names:
        lookup(name, key=f"lookup.{name.replace(' ', '_')}")


# --- virtual-network modes --------------------------------------------------


def lookup(name: str, key: str = "addrs") -> None:
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        out(key, err_name(exc))
        return
    out(key, ",".join(sorted({info[4][0] for info in infos})))


def mode_lookup(args: list[str]) -> None:
    lookup(args[0])


def mode_bind(args: list[str]) -> None:
    port = int(args[0])
    host = args[1] if len(args) > 1 else LOOPBACK
    try:
        sock = tcp()
    except OSError as exc:  # sockets denied altogether
        out("socket", err_name(exc))
        return
    try:
        sock.bind((host, port))
        sock.listen(1)
    except OSError as exc:
        out("bind", err_name(exc))
    else:
        out("bind", "ok")
        out("port_nonzero", int(sock.getsockname()[1] != 0))
    sock.close()


def mode_echo_server(args: list[str]) -> None:
    port = int(args[0]) if args else 0
    limit = int(args[1]) if len(args) > 1 else 0
    server = listener(LOOPBACK, port)
    server.setblocking(False)
    out("listening", server.getsockname()[1])
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ, None)
    pending: dict[socket.socket, bytearray] = {}
    served = total = 0
    while limit == 0 or served < limit:
        for key, events in sel.select():
            sock = key.fileobj
            if sock is server:
                conn, _ = server.accept()
                conn.setblocking(False)
                pending[conn] = bytearray()
                sel.register(conn, selectors.EVENT_READ)
                continue
            buf = pending[sock]
            if events & selectors.EVENT_READ:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    data = None
                except ConnectionError:
                    data = b""
                    buf.clear()
                if data == b"":
                    if buf:  # flush what is left before closing
                        sock.setblocking(True)
                        sock.sendall(buf)
                    sel.unregister(sock)
                    del pending[sock]
                    sock.close()
                    served += 1
                    continue
                if data:
                    total += len(data)
                    buf += data
            if buf:
                try:
                    sent = sock.send(buf)
                    del buf[:sent]
                except BlockingIOError:
                    pass
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if buf else 0)
            sel.modify(sock, mask)
    sel.close()
    server.close()
    out("served", served)
    out("echoed_bytes", total)


def mode_echo_client(args: list[str]) -> None:
    port = int(args[0])
    message = args[1].encode() if len(args) > 1 else b"hello"
    sock = socket.create_connection((LOOPBACK, port), timeout=30)
    sock.sendall(message)
    sock.shutdown(socket.SHUT_WR)
    data = recv_all(sock)
    sock.close()
    out("echo", data.decode(errors="replace"))
    out("echo_len", len(data))
    out("match", int(data == message))


def mode_rtt(args: list[str]) -> None:
    """``rtt HOST PORT N``: N one-byte round trips over one connection to an echo server."""
    host, port, rounds = args[0], int(args[1]), int(args[2])
    sock = socket.create_connection((host, port), timeout=30)
    ok = 0
    start = time.monotonic_ns()
    for _ in range(rounds):
        sock.sendall(b"x")
        if sock.recv(1) == b"x":
            ok += 1
    elapsed = time.monotonic_ns() - start
    sock.close()
    out("rounds", ok)
    out("elapsed_us", elapsed // 1000)
    if ok != rounds:
        sys.exit(1)


def mode_half_close(args: list[str]) -> None:
    port = int(args[0])
    sock = tcp()
    sock.connect((LOOPBACK, port))
    sock.sendall(b"part1")
    sock.shutdown(socket.SHUT_WR)
    try:
        sock.send(b"late")
        out("send_after_shutdown", "ok")
    except OSError as exc:
        out("send_after_shutdown", err_name(exc))
    data = recv_all(sock)
    out("received", data.decode())
    out("eof", 1)
    sock.close()


def pattern(n: int) -> bytes:
    block = hashlib.sha256(b"fabric-bulk").digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def mode_bulk_send(args: list[str]) -> None:
    """``bulk-send PORT NBYTES [HOST]``: send, half-close, read to EOF (an echo comes back)."""
    port, nbytes = int(args[0]), int(args[1])
    host = args[2] if len(args) > 2 else LOOPBACK
    payload = pattern(nbytes)
    sock = socket.create_connection((host, port), timeout=60)
    start = time.monotonic()
    view = memoryview(payload)
    while view:
        sent = sock.send(view[:262144])
        view = view[sent:]
    sock.shutdown(socket.SHUT_WR)
    back = len(recv_all(sock))
    elapsed = time.monotonic() - start
    sock.close()
    out("sent", nbytes)
    out("received_back", back)
    out("elapsed_us", int(elapsed * 1e6))
    out("sha256", hashlib.sha256(payload).hexdigest())
    out("mib_per_s", f"{nbytes / 1048576 / max(elapsed, 1e-9):.1f}")


def mode_bulk_recv(args: list[str]) -> None:
    port = int(args[0]) if args else 0
    server = listener(LOOPBACK, port)
    out("listening", server.getsockname()[1])
    conn, _ = server.accept()
    digest = hashlib.sha256()
    total = 0
    while True:
        chunk = conn.recv(262144)
        if not chunk:
            break
        total += len(chunk)
        digest.update(chunk)
    conn.close()
    server.close()
    out("received", total)
    out("sha256", digest.hexdigest())


def mode_udp_echo_server(args: list[str]) -> None:
    port = int(args[0]) if args else 0
    limit = int(args[1]) if len(args) > 1 else 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, port))
    out("listening", sock.getsockname()[1])
    count = 0
    while limit == 0 or count < limit:
        data, sender = sock.recvfrom(65535)
        sock.sendto(data, sender)
        count += 1
    sock.close()
    out("echoed", count)


def mode_udp_client(args: list[str]) -> None:
    port = int(args[0])
    message = args[1].encode() if len(args) > 1 else b"hello"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    sock.sendto(message, (LOOPBACK, port))
    try:
        data, sender = sock.recvfrom(65535)
    except OSError as exc:
        out("reply", err_name(exc))
    else:
        out("reply", data.decode(errors="replace"))
        out("from_port", sender[1])
        out("match", int(data == message))
    sock.close()


def mode_asyncio_clients(args: list[str]) -> None:
    port, count = int(args[0]), int(args[1])

    async def client(index: int) -> bool:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        message = f"client-{index}-".encode() * (index + 1)
        writer.write(message)
        await writer.drain()
        echoed = await reader.readexactly(len(message))
        writer.close()
        await writer.wait_closed()
        return echoed == message

    async def main() -> list[bool]:
        return await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(count))), 60)

    results = asyncio.run(main())
    out("clients", count)
    out("ok", sum(results))


def mode_pymysql(args: list[str]) -> None:
    host = args[0] if args else LOOPBACK
    port = int(args[1]) if len(args) > 1 else 3306
    conn = pymysql.connect(
        host=host, port=port, user="root", password="", database="test", connect_timeout=10
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            out("select1", cur.fetchone()[0])
            cur.execute(
                "CREATE TEMPORARY TABLE fabric_guest_t (id INT PRIMARY KEY, name VARCHAR(64))"
            )
            rows = [(1, "alpha"), (2, "beta"), (3, "gamma \u00e9")]
            cur.executemany("INSERT INTO fabric_guest_t VALUES (%s, %s)", rows)
            cur.execute("SELECT id, name FROM fabric_guest_t ORDER BY id")
            back = cur.fetchall()
            out("rows", ";".join(f"{i}:{n}" for i, n in back))
            out("roundtrip", int(list(back) == rows))
        conn.commit()
    finally:
        conn.close()
    out("closed", 1)


def mode_pymysql_pooled(args: list[str]) -> None:
    host, port, user, password, db, table = args[0], int(args[1]), *args[2:6]
    conn = pymysql.connect(
        host=host, port=port, user=user, password=password, database=db, connect_timeout=10
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            out("select1", cur.fetchone()[0])
            cur.execute("SELECT DATABASE(), @@autocommit")
            out("session", ":".join(str(v) for v in cur.fetchone()))
            rows = [(1, "alpha"), (2, "beta"), (3, "gamma \u00e9")]
            conn.begin()
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", rows)
            cur.execute(f"SELECT id, name FROM {table} ORDER BY id")
            back = cur.fetchall()
            conn.commit()
            out("rows", ";".join(f"{i}:{n}" for i, n in back))
            out("roundtrip", int(list(back) == rows))
            cur.execute(f"DELETE FROM {table} WHERE id = %s", (1,))
            conn.rollback()
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            out("after_rollback", cur.fetchone()[0])
            try:
                cur.execute(f"SELECT * FROM {table}_missing")
            except pymysql.MySQLError as exc:
                out("error", exc.args[0])
            cur.execute("SELECT 2")
            out("select2", cur.fetchone()[0])
        conn.commit()
    finally:
        conn.close()
    out("closed", 1)


MODES = {
    "tcp-states": mode_tcp_states,
    "tcp-bind": mode_tcp_bind,
    "tcp-connect": mode_tcp_connect,
    "tcp-sample": mode_tcp_sample,
    "tcp-misc": mode_tcp_misc,
    "udp-sample": mode_udp_sample,
    "udp-states": mode_udp_states,
    "ip-name-lookup": mode_ip_name_lookup,
    "lookup": mode_lookup,
    "bind": mode_bind,
    "echo-server": mode_echo_server,
    "echo-client": mode_echo_client,
    "rtt": mode_rtt,
    "half-close": mode_half_close,
    "bulk-send": mode_bulk_send,
    "bulk-recv": mode_bulk_recv,
    "udp-echo-server": mode_udp_echo_server,
    "udp-client": mode_udp_client,
    "asyncio-clients": mode_asyncio_clients,
    "pymysql": mode_pymysql,
    "pymysql-pooled": mode_pymysql_pooled,
}


class Run(exports.Run):
    def run(self) -> None:
        argv = sys.argv[1:]
        mode = argv[0] if argv else ""
        handler = MODES.get(mode)
        if handler is None:
            out("error", f"unknown mode {mode!r}")
            sys.exit(2)
        handler(argv[1:])
        sys.stdout.flush()
