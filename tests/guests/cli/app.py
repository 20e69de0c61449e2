"""A wasi:cli/command guest exercising the CLI-level WASI interfaces.

Usage: ``guest MODE [ARGS...]``. Every mode prints one ``key=value`` line per
fact and flushes; the same guest runs under the wasmtime CLI (the reference)
and under fabric, and both must print the same facts.

Modes: args, env [NAME...], exit N, streams, clocks, random, fs-write DIR,
fs-read DIR, fs-escape DIR, trap, loop, sleep MS, asyncio-sleep MS N, recurse.
"""

# Only modules imported at build time exist at run time: import everything here.
import asyncio
import errno
import hashlib
import os
import random
import stat
import sys
import time

from wit_world import exports
from wit_world.imports import insecure, insecure_seed, monotonic_clock, wall_clock
from wit_world.imports import random as wasi_random


def out(key: str, value: object) -> None:
    sys.stdout.write(f"{key}={value}\n")
    sys.stdout.flush()


def errno_name(exc: OSError) -> str:
    if exc.errno is None:
        return type(exc).__name__
    return errno.errorcode.get(exc.errno, str(exc.errno))


# --- modes ----------------------------------------------------------------


def mode_args(args: list[str]) -> None:
    out("argv0", sys.argv[0] if sys.argv else "")
    out("argc", len(args))
    for index, arg in enumerate(args):
        out(f"arg{index}", arg)


def mode_env(args: list[str]) -> None:
    names = args if args else sorted(os.environ)
    if not args:
        out("env_count", len(os.environ))
    for name in names:
        out(f"env.{name}", os.environ.get(name, "<unset>"))


def mode_exit(args: list[str]) -> None:
    code = int(args[0]) if args else 0
    out("exiting", code)
    sys.exit(code)


def mode_streams(args: list[str]) -> None:
    sys.stdout.write("stdout=hello from stdout\n")
    sys.stdout.flush()
    sys.stderr.write("stderr=hello from stderr\n")
    sys.stderr.flush()
    data = sys.stdin.buffer.read()
    out("stdin_len", len(data))
    out("stdin_sha256", hashlib.sha256(data).hexdigest())
    # A large payload arrives whole when written in a loop: sys.stdout.buffer is
    # an unbuffered FileIO here, and one write() may take only part of it
    # (64 KiB under wasmtime). sys.stdout.write() would silently drop the rest.
    big = int(args[0]) if args else 0
    if big:
        payload = (b"0123456789abcdef" * (big // 16 + 1))[:big]
        view = memoryview(payload + b"\n")
        calls = 0
        while view:
            written = sys.stdout.buffer.write(view)
            view = view[written or 0 :]
            calls += 1
        sys.stdout.flush()
        out("big_sha256", hashlib.sha256(payload).hexdigest())
        out("big_write_calls_positive", int(calls > 0))


def mode_clocks(args: list[str]) -> None:
    wall = time.time()
    year = time.gmtime(wall).tm_year
    out("wall_plausible", int(2020 <= year < 2200))
    now = wall_clock.now()
    seconds, nanoseconds = now.seconds, now.nanoseconds
    out("wall_clock_plausible", int(abs(seconds + nanoseconds / 1e9 - wall) < 60))
    samples = [time.monotonic_ns() for _ in range(1000)]
    out("monotonic_nondecreasing", int(all(a <= b for a, b in zip(samples, samples[1:]))))
    before = monotonic_clock.now()
    time.sleep(0.002)
    after = monotonic_clock.now()
    out("monotonic_advances", int(after > before))
    out("monotonic_advance_ge_sleep", int(after - before >= 2_000_000))
    out("monotonic_resolution_positive", int(monotonic_clock.resolution() > 0))
    res = wall_clock.resolution()
    out("wall_resolution_positive", int(res.seconds > 0 or res.nanoseconds > 0))
    info = time.get_clock_info("monotonic")
    out("python_monotonic_monotonic", int(info.monotonic))
    out("perf_counter_advances", int(time.perf_counter() >= 0))


def mode_random(args: list[str]) -> None:
    data = os.urandom(32)
    out("urandom_len", len(data))
    out("urandom_hex", data.hex())
    direct = wasi_random.get_random_bytes(32)
    out("random_bytes_len", len(direct))
    out("random_bytes_hex", direct.hex())
    out("random_u64_fits", int(0 <= wasi_random.get_random_u64() < 2**64))
    weak = insecure.get_insecure_random_bytes(16)
    out("insecure_len", len(weak))
    out("insecure_u64_fits", int(0 <= insecure.get_insecure_random_u64() < 2**64))
    lo, hi = insecure_seed.insecure_seed()
    out("insecure_seed_fits", int(0 <= lo < 2**64 and 0 <= hi < 2**64))
    out("system_random_fits", int(0 <= random.SystemRandom().getrandbits(64) < 2**64))
    # The random module is reseeded when the instance starts, not frozen at build time.
    out("random_module_hex", f"{random.getrandbits(64):016x}")


def mode_fs_write(args: list[str]) -> None:
    base = args[0]
    sub = os.path.join(base, "work")
    os.mkdir(sub)
    out("mkdir", "ok")
    first = os.path.join(sub, "a.txt")
    with open(first, "w") as fh:
        fh.write("hello fabric\n")
    with open(first, "a") as fh:
        fh.write("second line\n")
    with open(os.path.join(sub, "bin.dat"), "wb") as fh:
        fh.write(bytes(range(256)) * 4)
    out("listdir", ",".join(sorted(os.listdir(sub))))
    st = os.stat(first)
    out("stat_size", st.st_size)
    out("stat_isreg", int(stat.S_ISREG(st.st_mode)))
    out("stat_isdir", int(stat.S_ISDIR(os.stat(sub).st_mode)))
    second = os.path.join(sub, "b.txt")
    os.rename(first, second)
    out("exists_after_rename", f"{int(os.path.exists(first))},{int(os.path.exists(second))}")
    with open(second) as fh:
        out("read_back", fh.read().replace("\n", "|"))
    with open(second, "r+b") as fh:
        fh.seek(6)
        fh.write(b"FABRIC")
        fh.seek(0)
        out("pwrite_read", fh.read().decode().replace("\n", "|"))
    os.truncate(second, 5)
    out("truncated_size", os.stat(second).st_size)
    nested = os.path.join(sub, "x", "y")
    os.makedirs(nested)
    with open(os.path.join(nested, "deep.txt"), "w") as fh:
        fh.write("deep")
    walked = sorted(
        os.path.relpath(os.path.join(root, name), sub)
        for root, _dirs, files in os.walk(sub)
        for name in files
    )
    out("walk", ",".join(walked))
    try:
        os.mkdir(sub)
    except OSError as exc:
        out("mkdir_again", errno_name(exc))
    try:
        os.rmdir(sub)
    except OSError as exc:
        out("rmdir_nonempty", errno_name(exc))
    try:
        open(os.path.join(sub, "missing.txt"))
    except OSError as exc:
        out("open_missing", errno_name(exc))
    # Leave one file behind for the host to check, remove the rest.
    with open(os.path.join(base, "result.txt"), "w") as fh:
        fh.write("written by the guest\n")
    os.remove(os.path.join(nested, "deep.txt"))
    os.rmdir(nested)
    os.rmdir(os.path.dirname(nested))
    os.remove(second)
    os.remove(os.path.join(sub, "bin.dat"))
    os.rmdir(sub)
    out("final_listdir", ",".join(sorted(os.listdir(base))))


def mode_fs_read(args: list[str]) -> None:
    base = args[0]
    entries = sorted(os.listdir(base))
    out("entries", ",".join(entries))
    for name in entries:
        path = os.path.join(base, name)
        if os.path.isdir(path):
            out(f"dir.{name}", ",".join(sorted(os.listdir(path))))
        else:
            with open(path, "rb") as fh:
                data = fh.read()
            out(f"file.{name}", f"{len(data)}:{hashlib.sha256(data).hexdigest()}")
    try:
        with open(os.path.join(base, "readonly-probe.txt"), "w") as fh:
            fh.write("x")
        out("write_probe", "ok")
        os.remove(os.path.join(base, "readonly-probe.txt"))
    except OSError as exc:
        out("write_probe", errno_name(exc))


def _probe(key: str, path: str) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        out(key, "opened")
    except OSError as exc:
        out(key, errno_name(exc))


def mode_fs_escape(args: list[str]) -> None:
    base = args[0]
    inner = os.path.join(base, "escape-probe")
    os.makedirs(inner, exist_ok=True)
    _probe("dotdot", os.path.join(base, "..", "outside"))
    _probe("dotdot_deep", os.path.join(inner, "..", "..", "outside"))
    _probe("dotdot_inside", os.path.join(inner, "..", "escape-probe", "..", "inside.txt"))
    os.rmdir(inner)
    _probe("absolute", "/etc/passwd")
    try:
        os.listdir("/")
        out("listdir_root", "ok")
    except OSError as exc:
        out("listdir_root", errno_name(exc))


def mode_trap(args: list[str]) -> None:
    out("before_trap", 1)
    raise RuntimeError("deliberate failure")


def mode_loop(args: list[str]) -> None:
    out("looping", 1)
    n = 0
    while True:
        n += 1


def mode_sleep(args: list[str]) -> None:
    ms = int(args[0]) if args else 100
    start = time.monotonic_ns()
    time.sleep(ms / 1000)
    elapsed = time.monotonic_ns() - start
    out("slept_ms", ms)
    out("elapsed_ge_requested", int(elapsed >= ms * 1_000_000 - 1_000_000))


def mode_asyncio_sleep(args: list[str]) -> None:
    ms = int(args[0]) if args else 100
    count = int(args[1]) if len(args) > 1 else 4
    finished: list[int] = []

    async def task(index: int) -> int:
        # Later tasks sleep less: they only finish first when all sleep at once.
        await asyncio.sleep((count - index) * ms / count / 1000)
        finished.append(index)
        return index

    async def main() -> list[int]:
        return await asyncio.gather(*(task(i) for i in range(count)))

    start = time.monotonic_ns()
    results = asyncio.run(main())
    elapsed = time.monotonic_ns() - start
    out("tasks", count)
    out("results", ",".join(map(str, results)))
    out("finish_order", ",".join(map(str, finished)))
    out("elapsed_ge_longest", int(elapsed >= ms * 1_000_000 - 1_000_000))


def mode_recurse(args: list[str]) -> None:
    depth = 0

    def down() -> None:
        nonlocal depth
        depth += 1
        down()

    try:
        down()
    except RecursionError:
        out("recursion_error", 1)
    out("depth_over_100", int(depth > 100))
    out("recursion_limit", sys.getrecursionlimit())
    out("ok", 1)


MODES = {
    "args": mode_args,
    "env": mode_env,
    "exit": mode_exit,
    "streams": mode_streams,
    "clocks": mode_clocks,
    "random": mode_random,
    "fs-write": mode_fs_write,
    "fs-read": mode_fs_read,
    "fs-escape": mode_fs_escape,
    "trap": mode_trap,
    "loop": mode_loop,
    "sleep": mode_sleep,
    "asyncio-sleep": mode_asyncio_sleep,
    "recurse": mode_recurse,
}


class Run(exports.Run):
    def run(self) -> None:
        argv = sys.argv[1:]
        mode = argv[0] if argv else "args"
        handler = MODES.get(mode)
        if handler is None:
            out("error", f"unknown mode {mode!r}")
            sys.exit(2)
        handler(argv[1:])
        sys.stdout.flush()
