"""Where one PyMySQL invocation through the MySQL front door spends its time,
next to the same invocation connecting to MariaDB itself through egress.

Starts the workload of the ``mysql-select1`` contenders
(`benches.fabric_dbpool`: the dbpool service with its MySQL front door on
virtual port 3306, the dbbench component, an egress rule to MariaDB) and
runs the paths one invocation at a time, taking turns (door, direct,
pooled, door, ...), so a busy machine slows all of them alike:

* ``door``: ``fabric-mysqldoor-py`` (PyMySQL against the front door);
* ``direct``: ``fabric-direct-py`` (PyMySQL against MariaDB through egress);
* ``pooled``: ``fabric-dbpool-py`` (the dbpool SDK, the fresh-instance floor);
* ``door-reuse`` / ``direct-reuse``: the first two in reused instances
  (PyMySQL still connects and logs in on every invocation).

Per path it prints medians of the invocation's wall time, the fabric
process's CPU time (MariaDB's work runs in its own process and is not in
it), the guest's own ``connect_ms`` (PyMySQL's connect: greeting, login,
``SET NAMES``, ``SET AUTOCOMMIT``) and ``query_ms`` (``SELECT 1``,
``COMMIT``, close), and host calls by WIT function. For the front door it
also prints a timeline of one client's session: every packet the front door
read or wrote and every lease step, with the time since the connection was
accepted; the gaps after a write are the guest's (and the loopback's), the
gaps after a read are the front door's::

    python -m benches.profile_mysqldoor                    # door, direct, pooled
    python -m benches.profile_mysqldoor -n 200 --path door --path direct
    python -m benches.profile_mysqldoor --path door-reuse --path direct-reuse
    python -m benches.profile_mysqldoor --cprofile door --top 30
    python -m benches.profile_mysqldoor --scanner     # the response scanner alone
    python -m benches.profile_mysqldoor --replay      # SET autocommit=0 + SELECT 1, two ways

``--scanner`` times `wire.ResponseScanner` alone over responses captured
from MariaDB (``SELECT 1``; 1,000 rows of two columns), the cost the front
door pays to follow every response it forwards. ``--replay`` times, from
this process straight to MariaDB, the replayed ``SET autocommit=0``
pipelined ahead of ``SELECT 1`` (what the front door sends) against the two
as one multi-statement ``COM_QUERY``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import uvloop

from benches import fabric_dbpool
from benches.env import BenchEnv
from benches.profile_invocation import HostCallCounter
from services.dbpool.mysql import door as door_module
from services.dbpool.mysql import relay as door_relay
from services.dbpool.mysql import session as door_session
from services.dbpool.mysql import wire

CONTENDERS: dict[str, Callable[[Any], Any]] = {
    "door": lambda env: fabric_dbpool.MySQLDoorPython(env, "mysql"),
    "direct": lambda env: fabric_dbpool.DirectPython(env, "mysql"),
    "pooled": lambda env: fabric_dbpool.PooledPython(env, "mysql"),
    "door-reuse": lambda env: fabric_dbpool.MySQLDoorPythonReuse(env, "mysql"),
    "direct-reuse": lambda env: fabric_dbpool.DirectPythonReuse(env, "mysql"),
}
DEFAULT_PATHS = ("door", "direct", "pooled")


class DoorTimeline:
    """Records what the front door's sessions read, write and lease, with times."""

    def __init__(self) -> None:
        self.sessions: list[list[tuple[float, str]]] = []
        self._saved: list[tuple[str, Any]] = []
        self._relay_saved: list[tuple[str, Any]] = []
        self._release_saved: Any = None

    def install(self) -> None:
        cls = door_session.MySQLSession
        timeline = self

        orig_init, orig_read, orig_send = cls.__init__, cls._read_packet, cls._send
        orig_lease, orig_run = cls._on_lease, cls.run
        orig_relay_send, orig_scan = door_relay.Relay.send, door_relay.Relay._scan
        orig_release = door_module.MySQLFrontDoor._release
        current: list[Any] = [None]

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            orig_init(self, *args, **kwargs)
            self._trace = [(time.perf_counter(), "accepted")]
            timeline.sessions.append(self._trace)

        async def read(self: Any) -> Any:
            packet = await orig_read(self)
            what = "EOF" if packet is None else _describe(packet[1])
            self._trace.append((time.perf_counter(), f"read  {what}"))
            return packet

        async def send(self: Any, data: Any) -> None:
            await orig_send(self, data)
            self._trace.append((time.perf_counter(), f"wrote {len(data)} bytes"))

        async def on_lease(self: Any, script: Any, *, dirty: bool) -> None:
            self._trace.append((time.perf_counter(), "lease: acquire"))
            current[0] = self._trace
            try:
                await orig_lease(self, script, dirty=dirty)
            finally:
                current[0] = None
            self._trace.append((time.perf_counter(), "lease: exchange done"))

        def release(self: Any, pool: Any, lease: Any, discard: bool) -> Any:
            trace = current[0]  # the session giving the lease back

            async def timed() -> None:
                if trace is not None:
                    trace.append((time.perf_counter(), "lease: release starts"))
                await orig_release(self, pool, lease, discard)
                if trace is not None:
                    trace.append((time.perf_counter(), "lease: back in the pool"))

            return timed()

        def relay_send(self: Any, *commands: bytes) -> None:
            trace = current[0]
            if trace is not None:
                trace.append((time.perf_counter(), f"server: send {len(commands)} command(s)"))
                if not isinstance(self.reader, _TimedReader):
                    self.reader = _TimedReader(self.reader, trace)
            orig_relay_send(self, *commands)

        async def scan(self: Any, kind: Any, *, forward: bool) -> Any:
            result = await orig_scan(self, kind, forward=forward)
            if current[0] is not None:
                current[0].append((time.perf_counter(), f"server: {kind.name} response read"))
            return result

        async def run(self: Any) -> None:
            try:
                await orig_run(self)
            finally:
                self._trace.append((time.perf_counter(), "session ended"))

        for name, fn in (
            ("__init__", init),
            ("_read_packet", read),
            ("_send", send),
            ("_on_lease", on_lease),
            ("run", run),
        ):
            self._saved.append((name, getattr(cls, name)))
            setattr(cls, name, fn)
        for name, fn in (("send", relay_send), ("_scan", scan)):
            self._relay_saved.append((name, getattr(door_relay.Relay, name)))
            setattr(door_relay.Relay, name, fn)
        self._release_saved = orig_release
        door_module.MySQLFrontDoor._release = release  # type: ignore[method-assign]

    def remove(self) -> None:
        cls = door_session.MySQLSession
        for name, fn in self._saved:
            setattr(cls, name, fn)
        for name, fn in self._relay_saved:
            setattr(door_relay.Relay, name, fn)
        if self._release_saved is not None:
            door_module.MySQLFrontDoor._release = self._release_saved  # type: ignore[method-assign]
            self._release_saved = None
        self._saved.clear()
        self._relay_saved.clear()

    def print_median(self) -> None:
        """Each step's median time since accept over the recorded sessions of the
        most common shape (same sequence of steps)."""
        shapes = Counter(tuple(step for _, step in s) for s in self.sessions)
        if not shapes:
            return
        shape, count = shapes.most_common(1)[0]
        rows = [s for s in self.sessions if tuple(step for _, step in s) == shape]
        print(f"--- front door timeline: median of {count} sessions (ms since accept)")
        previous = 0.0
        for i, step in enumerate(shape):
            at = statistics.median((s[i][0] - s[0][0]) * 1000 for s in rows)
            print(f"  {at:7.3f}  (+{at - previous:6.3f})  {step}")
            previous = at


class _TimedReader:
    """A server connection's reader that notes when each read returns."""

    def __init__(self, reader: Any, trace: list[tuple[float, str]]) -> None:
        self.reader, self.trace = reader, trace

    async def read(self, n: int) -> bytes:
        data = await self.reader.read(n)
        self.trace.append((time.perf_counter(), f"server: {len(data)} bytes arrived"))
        return data


def _describe(body: bytes) -> str:
    if not body:
        return "empty packet"
    names = {**door_session.COMMAND_NAMES}
    command = names.get(body[0])
    if command == "query":
        return f"COM_QUERY {body[1:60].decode('utf-8', 'replace')!r}"
    if command is not None:
        return f"COM_{command.upper()}"
    return f"{len(body)}-byte packet (handshake response?)"


def _guest_times(stdout: str) -> dict[str, float]:
    times = {}
    for line in stdout.splitlines():
        key, _, value = line.partition("=")
        if key in ("connect_ms", "query_ms", "total_ms"):
            times[key] = float(value)
    return times


async def _invoke(contender: Any) -> tuple[float, float, dict[str, float]]:
    wl = contender.workload
    start, cpu = time.perf_counter(), time.process_time()
    result = await wl.invoke(contender.component, None, contender.args)
    wall, used = time.perf_counter() - start, time.process_time() - cpu
    if result["exit_code"] != 0:
        raise RuntimeError(f"{contender.name} failed: {result['stdout']}{result['stderr']}")
    return wall * 1000, used * 1000, _guest_times(result["stdout"])


SCANNED = {"SELECT 1": 2000, "SELECT seq, 'abcdef' FROM seq_1_to_1000": 50}


async def scanner(env: BenchEnv) -> None:
    """Time `ResponseScanner` over responses captured from MariaDB."""
    import aiomysql

    t = await env.mariadb()
    conn = await aiomysql.connect(
        host=t.host, port=t.port, user=t.user, password=t.password, db=t.database
    )
    try:
        for sql, rounds in SCANNED.items():
            conn._writer.write(wire.frame(0, b"\x03" + sql.encode()))
            data = b""
            while True:
                data += await conn._reader.read(1 << 20)
                probe = wire.ResponseScanner(wire.ResponseKind.RESULT)
                used = probe.feed(data)
                if probe.done:
                    break
            response = data[:used]
            start = time.perf_counter()
            for _ in range(rounds):
                wire.ResponseScanner(wire.ResponseKind.RESULT).feed(response)
            each = (time.perf_counter() - start) / rounds
            print(f"scanning {sql!r} ({len(response)} bytes): {each * 1e6:.1f} us")
    finally:
        conn.close()


async def replay(env: BenchEnv, rounds: int = 2000) -> None:
    """Time SET autocommit=0 + SELECT 1 pipelined vs as one multi-statement query."""
    import aiomysql

    t = await env.mariadb()
    conn = await aiomysql.connect(
        host=t.host, port=t.port, user=t.user, password=t.password, db=t.database
    )
    ways = {
        "pipelined (two COM_QUERY)": wire.frame(0, b"\x03SET autocommit=0")
        + wire.frame(0, b"\x03SELECT 1"),
        "one multi-statement COM_QUERY": wire.frame(0, b"\x03SET autocommit=0;SELECT 1"),
    }
    times: dict[str, list[float]] = {way: [] for way in ways}
    try:
        for _ in range(rounds):
            for way, data in ways.items():
                start = time.perf_counter()
                conn._writer.write(data)
                # pipelined: an OK, then the rows; one query: one response (the
                # OK says more results follow, then the rows)
                responses = 1 if way.startswith("one") else 2
                pending = b""
                for _ in range(responses):
                    follow = wire.ResponseScanner(wire.ResponseKind.RESULT)
                    while True:
                        if not pending:
                            pending = await conn._reader.read(1 << 16)
                        used = follow.feed(pending)
                        pending = pending[used:]
                        if follow.done:
                            break
                times[way].append(time.perf_counter() - start)
        for way, values in times.items():
            print(f"{way}: {statistics.median(values) * 1e6:.1f} us per exchange")
    finally:
        conn.close()


async def main(args: argparse.Namespace) -> None:
    paths = args.path or list(DEFAULT_PATHS)
    if args.scanner or args.replay:
        async with BenchEnv() as env:
            await (scanner(env) if args.scanner else replay(env))
        return
    async with BenchEnv() as env:
        contenders = {p: CONTENDERS[p](env) for p in paths}
        for c in contenders.values():
            await c.setup()
        try:
            for _ in range(args.warmup):
                for c in contenders.values():
                    await _invoke(c)
            samples: dict[str, list[tuple[float, float, dict[str, float]]]] = {p: [] for p in paths}
            timeline = DoorTimeline()
            timeline.install()
            try:
                for _ in range(args.n):
                    for p, c in contenders.items():
                        samples[p].append(await _invoke(c))
            finally:
                timeline.remove()
            counts: dict[str, Counter[str]] = {}
            for p, c in contenders.items():
                counter = HostCallCounter()
                counter.install()
                try:
                    for _ in range(args.host_calls):
                        await _invoke(c)
                finally:
                    counter.remove()
                counts[p] = counter.counts
            print(f"{args.n} invocations per path, taking turns; medians in ms")
            print(
                f"{'path':14} {'wall':>7} {'cpu':>7} {'connect':>8} {'query':>7} {'guest':>7}"
                f" {'host calls':>10}"
            )
            for p in paths:
                rows = samples[p]

                def med(values: list[float]) -> str:
                    return f"{statistics.median(values):.2f}" if values else "-"

                print(
                    f"{p:14} {med([r[0] for r in rows]):>7} {med([r[1] for r in rows]):>7}"
                    f" {med([r[2]['connect_ms'] for r in rows if 'connect_ms' in r[2]]):>8}"
                    f" {med([r[2]['query_ms'] for r in rows if 'query_ms' in r[2]]):>7}"
                    f" {med([r[2]['total_ms'] for r in rows if 'total_ms' in r[2]]):>7}"
                    f" {sum(counts[p].values()) / max(args.host_calls, 1):>10.1f}"
                )
            for p in paths:
                print(f"--- host calls per invocation, {p}")
                for name, count in counts[p].most_common(args.top):
                    print(f"  {count / max(args.host_calls, 1):6.1f}  {name.split('/', 1)[-1]}")
            timeline.print_median()
            if args.cprofile:
                await _profile(contenders[args.cprofile], args)
        finally:
            for c in contenders.values():
                await c.teardown()


async def _profile(contender: Any, args: argparse.Namespace) -> None:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.n):
        await _invoke(contender)
    prof.disable()
    stats = pstats.Stats(prof)
    calls = sum(c[1] for c in stats.stats.values())  # type: ignore[attr-defined]
    print(f"=== cProfile of {contender.name}: {calls / args.n:.0f} Python calls per invocation")
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key).print_stats(args.top)
        body = out.getvalue()
        print(f"--- top {args.top} by {key}")
        print(body[body.index("   ncalls") :].rstrip())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benches.profile_mysqldoor", description=__doc__)
    p.add_argument("--path", action="append", choices=list(CONTENDERS), help="repeatable")
    p.add_argument("-n", type=int, default=100, help="timed invocations per path")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--host-calls", type=int, default=10, help="invocations counting host calls")
    p.add_argument("--cprofile", choices=list(CONTENDERS), help="then profile this path")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--scanner", action="store_true", help="time the response scanner alone")
    p.add_argument("--replay", action="store_true", help="time the replayed SET two ways")
    return p.parse_args(argv)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parse()))
