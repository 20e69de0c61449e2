"""wasi:cli, clocks and random as a componentize-py guest sees them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fabric.runtime import Runtime
from fabric.wasi import WasiConfig, WasiCtx
from fabric.wasi.io import BytesInput


def parse(out: bytes) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in out.decode().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key] = value
    return facts


async def run(
    runtime: Runtime, guest: Path, *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    out = bytearray()
    err = bytearray()
    ctx = WasiCtx(
        WasiConfig(args=["app", *args], env=env or {}),
        stdin=BytesInput(stdin),
        stdout=out.extend,
        stderr=err.extend,
    )
    code = await runtime.run_command(runtime.load(guest), ctx, timeout=60)
    return code, parse(bytes(out)), bytes(err)


async def test_arguments_round_trip(runtime: Runtime, cli_guest: Path) -> None:
    code, facts, _ = await run(runtime, cli_guest, "args", "one", "two words", "ünïcode")
    assert code == 0
    assert facts["argc"] == "3"
    assert [facts["arg0"], facts["arg1"], facts["arg2"]] == ["one", "two words", "ünïcode"]


async def test_environment(runtime: Runtime, cli_guest: Path) -> None:
    code, facts, _ = await run(runtime, cli_guest, "env", env={"FOO": "bar", "EMPTY": ""})
    assert code == 0
    assert facts["env_count"] == "2"
    assert facts["env.FOO"] == "bar"


async def test_exit_codes(runtime: Runtime, cli_guest: Path) -> None:
    assert (await run(runtime, cli_guest, "exit", "0"))[0] == 0
    # WASI 0.2's exit carries only ok/err: any non-zero code is 1.
    assert (await run(runtime, cli_guest, "exit", "3"))[0] == 1


async def test_stdio(runtime: Runtime, cli_guest: Path) -> None:
    data = b"some input\n" * 1000
    code, facts, err = await run(runtime, cli_guest, "streams", stdin=data)
    assert code == 0
    assert facts["stdout"] == "hello from stdout"
    assert facts["stdin_len"] == str(len(data))
    assert facts["stdin_sha256"] == hashlib.sha256(data).hexdigest()
    assert b"stderr=hello from stderr" in err


async def test_clocks(runtime: Runtime, cli_guest: Path) -> None:
    code, facts, _ = await run(runtime, cli_guest, "clocks")
    assert code == 0
    for key in ("wall_plausible", "monotonic_nondecreasing", "monotonic_advance_ge_sleep"):
        assert facts[key] == "1", key


async def test_random(runtime: Runtime, cli_guest: Path) -> None:
    code, first, _ = await run(runtime, cli_guest, "random")
    code2, second, _ = await run(runtime, cli_guest, "random")
    assert code == code2 == 0
    assert first["urandom_len"] == "32"
    assert len(bytes.fromhex(first["urandom_hex"])) == 32
    assert first["urandom_hex"] != second["urandom_hex"]


async def test_deep_recursion_is_a_python_error_not_a_crash(
    runtime: Runtime, cli_guest: Path
) -> None:
    code, facts, _ = await run(runtime, cli_guest, "recurse")
    assert code == 0
    assert facts["recursion_error"] == "1"
