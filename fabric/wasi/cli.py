"""``wasi:cli`` — arguments, environment, exit, stdio, terminals."""

from __future__ import annotations

from typing import Any

from fabric.engine import GuestExit, HostInterface, HostResource, Ok

from .io import InputStream, OutputStream


class TerminalInput(HostResource):
    """``wasi:cli/terminal-input.terminal-input`` (never handed out: no TTYs)."""


class TerminalOutput(HostResource):
    """``wasi:cli/terminal-output.terminal-output`` (never handed out: no TTYs)."""


class _StdinView(InputStream):
    """A handle on the guest's stdin; every get-stdin shares the same stream."""

    def __init__(self, inner: InputStream) -> None:
        self._inner = inner

    def _read(self, n: int) -> bytes:
        return self._inner._read(n)

    def _readable(self) -> bool:
        return self._inner._readable()

    async def _wait_readable(self) -> None:
        await self._inner._wait_readable()


class _OutputView(OutputStream):
    def __init__(self, inner: OutputStream) -> None:
        self._inner = inner

    def _check_write(self) -> int:
        return self._inner._check_write()

    def _write(self, data: bytes) -> None:
        self._inner._write(data)

    def _flush(self) -> None:
        self._inner._flush()

    def _flushed(self) -> bool:
        return self._inner._flushed()

    def _writable(self) -> bool:
        return self._inner._writable()

    async def _wait_writable(self) -> None:
        await self._inner._wait_writable()


def _exit(cx: Any, status: Any) -> None:
    code = 0 if isinstance(status, Ok) else 1
    cx.exit_code = code
    raise GuestExit(code)


def interfaces(version: str) -> list[HostInterface]:
    env = HostInterface(f"wasi:cli/environment@{version}")
    env.func("get-environment", lambda cx: list(cx.config.env.items()))
    env.func("get-arguments", lambda cx: list(cx.config.args))
    env.func("initial-cwd", lambda cx: cx.config.cwd)

    ex = HostInterface(f"wasi:cli/exit@{version}")
    ex.func("exit", _exit)

    def exit_with_code(cx: Any, code: int) -> None:
        cx.exit_code = code
        raise GuestExit(code)

    ex.func("exit-with-code", exit_with_code)

    stdin = HostInterface(f"wasi:cli/stdin@{version}")
    stdin.func("get-stdin", lambda cx: _StdinView(cx.stdin))
    stdout = HostInterface(f"wasi:cli/stdout@{version}")
    stdout.func("get-stdout", lambda cx: _OutputView(cx.stdout))
    stderr = HostInterface(f"wasi:cli/stderr@{version}")
    stderr.func("get-stderr", lambda cx: _OutputView(cx.stderr))

    tin = HostInterface(f"wasi:cli/terminal-input@{version}")
    tin.resource("terminal-input", TerminalInput)
    tout = HostInterface(f"wasi:cli/terminal-output@{version}")
    tout.resource("terminal-output", TerminalOutput)
    ts = []
    for which in ("stdin", "stdout", "stderr"):
        t = HostInterface(f"wasi:cli/terminal-{which}@{version}")
        t.func(f"get-terminal-{which}", lambda cx: None)
        ts.append(t)
    return [env, ex, stdin, stdout, stderr, tin, tout, *ts]
