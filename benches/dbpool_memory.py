"""Peak memory of a dbpool server asked for a huge result, and fed by a client
that pipelines requests without reading the replies.

    python -m benches.dbpool_memory [--kind postgres|mysql] [--rows 20000000]

The server runs in a child process (so its RSS is its own) with the default
`Limits`; this process is the client. Printed as JSON: the reply to the huge
query (error code and message, seconds until it came), the server's RSS
before any query, after the huge query, while a client that pipelined
`--stall` queries of 1 MiB each does not read, after that client left, and
the peak (VmHWM). Run it from the root of a checkout (the child imports
`pools` and `services` from the current directory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

SERVER = """
import asyncio, sys
from pools import DatabaseConfig
from services.dbpool.service import DbPoolConfig, DbPoolService

async def main() -> None:
    kind = sys.argv[1]
    db = DatabaseConfig(kind=kind, user="postgres" if kind == "postgres" else "root",
                        password=None if kind == "postgres" else "", max_size=4)
    async with DbPoolService(DbPoolConfig(port=0, databases={"main": db})) as service:
        print(service.port, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""

HUGE = {
    "postgres": "SELECT generate_series(1, {rows})",
    "mysql": "SELECT seq FROM seq_1_to_{rows}",
}
WIDE = {
    "postgres": "SELECT repeat('x', 1000) FROM generate_series(1, 1000)",
    "mysql": "SELECT repeat('x', 1000) FROM seq_1_to_1000",
}


def rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) // 1024
    return out


async def huge_query(port: int, sql: str) -> dict[str, Any]:
    from services.dbpool.client import DbPoolError, connect

    client = await connect(port, timeout=600)
    start = time.monotonic()
    outcome: dict[str, Any]
    try:
        res = await client.execute("main", sql)
        outcome = {"reply": "rows", "rows": res.rowcount}
    except DbPoolError as exc:
        outcome = {"reply": exc.code, "message": exc.message}
    outcome["seconds"] = round(time.monotonic() - start, 2)
    await client.close()
    return outcome


async def stalled_reader(port: int, sql: str, n: int, pid: int) -> dict[str, int]:
    from services.dbpool.protocol import ClientConnection, Query

    _, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = ClientConnection()
    writer.write(conn.hello())
    writer.write(b"".join(conn.send(Query(i, "main", sql)) for i in range(1, n + 1)))
    await asyncio.sleep(10)  # the server works on while nobody reads
    during = rss(pid)["VmRSS"]
    writer.close()
    return during


async def run(kind: str, rows: int, stall: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, kind, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        port = int(await proc.stdout.readline())
        await asyncio.sleep(0.5)
        baseline = rss(proc.pid)["VmRSS"]
        huge = await huge_query(port, HUGE[kind].format(rows=rows))
        after_huge = rss(proc.pid)
        during_stall = await stalled_reader(port, WIDE[kind], stall, proc.pid)
        await asyncio.sleep(3)
        final = rss(proc.pid)
        return {
            "kind": kind,
            "rows": rows,
            "huge_query": huge,
            "rss_mib": {
                "baseline": baseline,
                "after_huge_query": after_huge["VmRSS"],
                "peak_during_huge_query": after_huge["VmHWM"],
                f"while_{stall}_replies_unread": during_stall,
                "after_the_stalled_client_left": final["VmRSS"],
                "peak": final["VmHWM"],
            },
        }
    finally:
        proc.terminate()
        await proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description="dbpool server memory under a huge result")
    parser.add_argument("--kind", choices=["postgres", "mysql"], default="postgres")
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--stall", type=int, default=500, help="pipelined 1 MiB queries")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.kind, args.rows, args.stall)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
