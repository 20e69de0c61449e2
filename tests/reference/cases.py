"""The differential baseline: guest modes and the facts they print under wasmtime.

Each :class:`Case` is one run of a test guest that needs nothing from outside
(no peer process, no preopened directory). ``tests/reference`` checks them
under the wasmtime CLI; a fabric test runs the same cases and must see the
same facts. Cases with peers or files are written out in the test modules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from tests.reference.wasmtime_cli import stable_facts

__all__ = ["CLI_CASES", "NET_CASES", "Case", "assert_facts"]


@dataclass(frozen=True)
class Case:
    """One guest run and what it must print.

    With ``exact`` the guest's facts (minus ``ignore`` and the nondeterministic
    keys) must equal ``expect``; otherwise ``expect`` is a subset.
    """

    id: str
    guest: str  # "cli" or "net" (see reference.guests)
    args: tuple[str, ...]
    expect: Mapping[str, str]
    returncode: int = 0
    stdin: bytes = b""
    env: Mapping[str, str] = field(default_factory=dict)
    exact: bool = True
    ignore: frozenset[str] = frozenset()


_STDIN = b"hello\n" * 1000

CLI_CASES: tuple[Case, ...] = (
    Case(
        "args",
        "cli",
        ("args", "one", "two words", "ünïcödé", "--flag=x"),
        {"argc": "4", "arg0": "one", "arg1": "two words", "arg2": "ünïcödé", "arg3": "--flag=x"},
    ),
    Case(
        "env-selected",
        "cli",
        ("env", "FABRIC_A", "FABRIC_MISSING"),
        {"env.FABRIC_A": "alpha=1", "env.FABRIC_MISSING": "<unset>"},
        env={"FABRIC_A": "alpha=1", "FABRIC_B": "beta"},
    ),
    Case(
        "env-all",
        "cli",
        ("env",),
        {"env_count": "2", "env.FABRIC_A": "alpha", "env.FABRIC_B": "b c"},
        env={"FABRIC_A": "alpha", "FABRIC_B": "b c"},
    ),
    Case("exit-0", "cli", ("exit", "0"), {"exiting": "0"}),
    Case("exit-1", "cli", ("exit", "1"), {"exiting": "1"}, returncode=1),
    # WASI 0.2 exit carries only ok/err: every non-zero status becomes 1.
    Case("exit-3", "cli", ("exit", "3"), {"exiting": "3"}, returncode=1),
    Case("exit-255", "cli", ("exit", "255"), {"exiting": "255"}, returncode=1),
    Case(
        "streams",
        "cli",
        ("streams",),
        {
            "stdout": "hello from stdout",
            "stdin_len": str(len(_STDIN)),
            "stdin_sha256": hashlib.sha256(_STDIN).hexdigest(),
        },
        stdin=_STDIN,
    ),
    Case(
        "clocks",
        "cli",
        ("clocks",),
        dict.fromkeys(
            (
                "wall_plausible",
                "wall_clock_plausible",
                "monotonic_nondecreasing",
                "monotonic_advances",
                "monotonic_advance_ge_sleep",
                "monotonic_resolution_positive",
                "wall_resolution_positive",
                "python_monotonic_monotonic",
                "perf_counter_advances",
            ),
            "1",
        ),
    ),
    Case(
        "random",
        "cli",
        ("random",),
        {
            "urandom_len": "32",
            "random_bytes_len": "32",
            "random_u64_fits": "1",
            "insecure_len": "16",
            "insecure_u64_fits": "1",
            "insecure_seed_fits": "1",
            "system_random_fits": "1",
        },
    ),
    Case("sleep", "cli", ("sleep", "50"), {"slept_ms": "50", "elapsed_ge_requested": "1"}),
    Case(
        "asyncio-sleep",
        "cli",
        ("asyncio-sleep", "250", "5"),
        {
            "tasks": "5",
            "results": "0,1,2,3,4",
            # Each later task sleeps less: finishing in reverse proves they overlapped.
            "finish_order": "4,3,2,1,0",
            "elapsed_ge_longest": "1",
        },
    ),
    Case(
        "recurse",
        "cli",
        ("recurse",),
        {"recursion_error": "1", "depth_over_100": "1", "recursion_limit": "1000", "ok": "1"},
    ),
)


def _sockopts(state: str) -> dict[str, str]:
    names = ("keepalive", "keepidle", "keepintvl", "keepcnt", "ttl", "rcvbuf", "sndbuf")
    return {f"{state}.{op}_{name}": "ok" for name in names for op in ("get", "set")}


_TCP_STATES = {
    "unbound.getsockname": "EINVAL",
    "unbound.getpeername": "ENOTCONN",
    "unbound.accept": "EINVAL",
    "unbound.shutdown": "ENOTCONN",
    "unbound.family": "AF_INET",
    "unbound.type": "SOCK_STREAM",
    **_sockopts("unbound"),
    # wasi-libc binds to 0.0.0.0:0 itself before start-listen.
    "unbound.listen": "ok",
    "unbound.listen.getsockname": "ok:0.0.0.0",
    "bound.getsockname": "ok:127.0.0.1:nonzero=1",
    "bound.bind_again": "EINVAL",
    "bound.getpeername": "ENOTCONN",
    "bound.accept": "EINVAL",
    "bound.shutdown": "ENOTCONN",
    **_sockopts("bound"),
    "listening.getsockname": "ok:127.0.0.1:nonzero=1",
    "listening.bind_again": "EINVAL",
    "listening.listen_again": "ok",
    "listening.getpeername": "ENOTCONN",
    "listening.shutdown": "ENOTCONN",
    "listening.accepting": "1",
    **_sockopts("listening"),
    "connected.peer_matches": "1",
    "connected.local_matches": "1",
    "connected.remote_matches": "1",
    "connected.bind": "EINVAL",
    "connected.connect_again": "EISCONN",
    "connected.listen": "EINVAL",
    "connected.accept": "EINVAL",
    "connected.accepting": "0",
    **_sockopts("connected"),
    "connected.shutdown_wr": "ok",
    "connected.shutdown_wr_again": "ok",
    "connected.peer_eof": "1",
}

_TCP_BIND = {
    "ephemeral.127.0.0.1": "ip=127.0.0.1 nonzero=1",
    "ephemeral.0.0.0.0": "ip=0.0.0.0 nonzero=1",
    "specific.127.0.0.1": "ok",
    "specific.127.0.0.1.same_port": "1",
    "specific.0.0.0.0": "ok",
    "specific.0.0.0.0.same_port": "1",
    "addrinuse.127.0.0.1": "EADDRINUSE",
    "addrinuse.0.0.0.0": "EADDRINUSE",
    # wasmtime sets SO_REUSEADDR: a port that is only bound may be bound again,
    # and a closed listener's port is free at once despite TIME_WAIT.
    "rebind_bound_only": "ok",
    "reuseaddr.bind": "ok",
    "reuseaddr.listen": "ok",
    "addrnotavail": "EADDRNOTAVAIL",
    "nonunicast.broadcast": "EINVAL",
    "nonunicast.multicast": "EINVAL",
    "v6.ephemeral": "ok",
    "v6.multicast": "EINVAL",
    "v6.mapped_v4": "EINVAL",
}

_TCP_CONNECT = {
    "connect.unspecified": "EINVAL",
    "connect.port0": "EINVAL",
    "connect.broadcast": "EINVAL",
    "connect.multicast": "EINVAL",
    "connect.refused": "ECONNREFUSED",
    "connect_ex.refused": "ECONNREFUSED",
    "connect.explicit_bind": "ok",
    "connect.explicit_bind.kept_port": "1",
    "connect.implicit_bind": "ok",
    "connect.implicit_bind.local": "127.0.0.1:nonzero=1",
    "v6.connect_unspecified": "EINVAL",
    "v6.connect_multicast": "EINVAL",
    "v6.connect_mapped_v4": "EINVAL",
}

_TCP_SAMPLE = {
    f"{family}.{index}.{key}": value
    for family in ("v4", "v6")
    for index, message in enumerate(("Hello, world!", "Greetings, planet!"))
    for key, value in (("empty_read", "1"), ("received", message), ("then_eof", "1"))
}

_TCP_MISC = {
    "rcvbuf_positive": "1",
    "recv_timeout": "timeout",
    "after_timeout_recv": "abc",
    "nonblocking_recv": "EAGAIN",
    "nonblocking_connect_started": "1",
    "nonblocking_connect_ready": "1",
    "nonblocking_connect_soerror": "0",
    "nonblocking_connect_peer": "1",
    "eof_read": "1",
    "eof_read_again": "1",
    "shut_rd_then_write": "after-shut-rd",
    "peer_eof_after_close": "1",
    "sockets_64": "64",
}

_UDP_SAMPLE = {
    f"{family}.{key}": value
    for family in ("v4", "v6")
    for key, value in (
        # wasi-libc refuses sendto() with an address on a connected socket.
        ("sendto_connected", "EISCONN"),
        ("client_local_is_loopback", "1"),
        ("0.data", "<empty>"),
        ("0.from_client", "1"),
        ("1.data", "Hello, world!"),
        ("1.from_client", "1"),
        ("2.data", "Greetings, planet!"),
    )
}

_UDP_STATES = {
    "unbound.getsockname": "EINVAL",
    "unbound.getpeername": "ENOTCONN",
    "bind": "ok",
    "bound.getsockname": "ok:127.0.0.1:nonzero=1",
    "bound.bind_again": "EINVAL",
    "bound.getpeername": "ENOTCONN",
    "addrinuse": "EADDRINUSE",
    "connect.port0": "EINVAL",
    "connect.unspecified": "EINVAL",
    "connect": "ok",
    "connected.getpeername": "ok:127.0.0.1:47",
    "recv_timeout": "timeout",
}

_IP_NAME_LOOKUP = {
    "lookup.localhost": "127.0.0.1",
    "lookup.0.0.0.0": "0.0.0.0",
    "lookup.127.0.0.1": "127.0.0.1",
    "lookup.192.0.2.0": "192.0.2.0",
    "lookup.::": "::",
    "lookup.::1": "::1",
    "lookup.2001:0db8:0:0:0:0:0:0": "2001:db8::",
    "lookup.dead:beef::": "dead:beef::",
    "lookup.DEAD:BEEF::0": "dead:beef::",
    # Malformed names: resolve-addresses gives invalid-argument, seen as EINVAL.
    "lookup._": "EINVAL",
    "lookup.a.b<&>": "EINVAL",
    "lookup.127.0.0.1:80": "EINVAL",
    "lookup.http://example.com/": "EINVAL",
}

NET_CASES: tuple[Case, ...] = (
    Case("tcp-states", "net", ("tcp-states",), _TCP_STATES),
    Case("tcp-bind", "net", ("tcp-bind",), _TCP_BIND),
    Case("tcp-connect", "net", ("tcp-connect",), _TCP_CONNECT),
    Case("tcp-sample", "net", ("tcp-sample",), _TCP_SAMPLE),
    Case("tcp-misc", "net", ("tcp-misc",), _TCP_MISC),
    Case("udp-sample", "net", ("udp-sample",), _UDP_SAMPLE),
    Case("udp-states", "net", ("udp-states",), _UDP_STATES),
    Case(
        "ip-name-lookup",
        "net",
        ("ip-name-lookup",),
        _IP_NAME_LOOKUP,
        # Real DNS: NXDOMAIN (gaierror:-2) or a timeout, depending on the host.
        ignore=frozenset({"lookup.nonexistent.invalid"}),
    ),
    Case("bind-ephemeral", "net", ("bind", "0"), {"bind": "ok", "port_nonzero": "1"}),
    Case("lookup-localhost", "net", ("lookup", "localhost"), {"addrs": "127.0.0.1"}),
)


def assert_facts(case: Case, facts: Mapping[str, str]) -> None:
    """Assert that ``facts`` printed by a run of ``case`` match its expectation."""
    got = {k: v for k, v in stable_facts(facts).items() if k not in case.ignore}
    if case.exact:
        missing = {k: v for k, v in case.expect.items() if k not in got}
        unexpected = {k: v for k, v in got.items() if k not in case.expect}
        wrong = {k: (got[k], v) for k, v in case.expect.items() if k in got and got[k] != v}
        assert not (missing or unexpected or wrong), (
            f"{case.id}: missing={missing} unexpected={unexpected} wrong(got, want)={wrong}"
        )
    else:
        absent = {k: (got.get(k), v) for k, v in case.expect.items() if got.get(k) != v}
        assert not absent, f"{case.id}: wrong(got, want)={absent}"
