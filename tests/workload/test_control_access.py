"""Who may serve and use a control socket: directories, socket owners, peer uids.

The suite runs as root; "another user" is ``nobody`` (uid 65534), played by
real processes started with ``subprocess.Popen(user=65534)``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fabric.workload import ControlAccessError, ControlServer, remote_invoke, remote_status
from fabric.workload.control_access import check_server_peer, peer_uid
from fabric.workload.status import StatusReport

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")

# A squatter: listens on argv[1] as another user, answers every line with a forged
# result and reports on stdout how many bytes it received.
SQUATTER = r"""
import os, socket, sys
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
os.chmod(path, 0o777)
srv.listen(8)
print("ready", flush=True)
srv.settimeout(float(sys.argv[2]))
try:
    while True:
        conn, _ = srv.accept()
        conn.settimeout(1.0)
        try:
            data = conn.recv(65536)
            print("got", len(data), flush=True)
            conn.sendall(b'{"type":"invoke-reply","result":"forged"}\n')
        except OSError:
            pass
        conn.close()
except OSError:
    pass
print("done", flush=True)
"""

# A client run as another user: sends a status request and prints the reply line.
OTHER_CLIENT = r"""
import socket, sys
c = socket.socket(socket.AF_UNIX)
c.connect(sys.argv[1])
try:
    c.sendall(b'{"type":"status"}\n')
except BrokenPipeError:
    pass  # the server may already have answered and hung up
print(c.makefile("rb").readline().decode().strip(), flush=True)
"""


class Target:
    def status(self) -> StatusReport:
        return StatusReport(manifest="inline", pid=os.getpid(), workloads=())

    async def invoke(
        self,
        workload: str,
        component: str,
        export: str | None,
        args: list[Any],
        output: Any = None,
    ) -> Any:
        return "genuine"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A /tmp-like directory: world-writable and sticky, so another user can bind in it."""
    path = Path(tempfile.mkdtemp(prefix="fca-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _usable_by_others(path: str) -> bool:
    real = Path(os.path.realpath(path))
    dirs_ok = all(p.stat().st_mode & 0o001 for p in real.parents)
    return real.is_file() and bool(real.stat().st_mode & 0o001) and dirs_ok


def other_python() -> str:
    """A Python interpreter the other user can run (the test's may live under /root)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and _usable_by_others(candidate):
            return candidate
    pytest.skip("no Python interpreter that another user may run")


def as_nobody(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [other_python(), "-c", script, *args],
        user=NOBODY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )


def test_runtime_directory_is_created_private(shared_dir: Path) -> None:
    runtime = shared_dir / "fabric-x" / "deeper"

    async def main() -> None:
        server = ControlServer(Target(), runtime / "c.sock", private_dir=True)
        old = os.umask(0)  # the mode must not depend on the umask
        try:
            await server.start()
        finally:
            os.umask(old)
        try:
            assert oct(runtime.stat().st_mode & 0o777) == "0o700"
            assert oct(server.path.stat().st_mode & 0o777) == "0o600"
            async with asyncio.timeout(10):
                assert (await remote_status(server.path)).pid == os.getpid()
        finally:
            await server.close()

    asyncio.run(main())


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701])
def test_runtime_directory_open_to_others_is_refused(shared_dir: Path, mode: int) -> None:
    runtime = shared_dir / "fabric-0"
    runtime.mkdir()
    runtime.chmod(mode)
    server = ControlServer(Target(), runtime / "c.sock", private_dir=True)
    with pytest.raises(ControlAccessError) as info:
        asyncio.run(server.start())
    assert f"{runtime} has mode {mode:04o}" in str(info.value)
    assert "chmod 700" in str(info.value)
    assert not (runtime / "c.sock").exists()


def test_runtime_directory_of_another_user_is_refused(shared_dir: Path) -> None:
    runtime = shared_dir / "fabric-0"
    runtime.mkdir(mode=0o700)
    os.chown(runtime, NOBODY, NOBODY)
    server = ControlServer(Target(), runtime / "c.sock", private_dir=True)
    with pytest.raises(ControlAccessError) as info:
        asyncio.run(server.start())
    message = str(info.value)
    assert f"the control directory {runtime} is owned by uid {NOBODY} (nobody)" in message
    assert "\n" not in message


def test_runtime_directory_that_is_a_symlink_is_refused(shared_dir: Path) -> None:
    real = shared_dir / "real"
    real.mkdir(mode=0o700)
    (shared_dir / "fabric-0").symlink_to(real)
    server = ControlServer(Target(), shared_dir / "fabric-0" / "c.sock", private_dir=True)
    with pytest.raises(ControlAccessError, match="is not a directory"):
        asyncio.run(server.start())


def test_socket_directory_of_another_user_is_refused(shared_dir: Path) -> None:
    theirs = shared_dir / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    server = ControlServer(Target(), theirs / "c.sock")
    with pytest.raises(ControlAccessError, match=f"owned by uid {NOBODY} \\(nobody\\)"):
        asyncio.run(server.start())


def test_squatted_socket_is_refused_by_server_and_client(shared_dir: Path) -> None:
    path = shared_dir / "control.sock"
    squatter = as_nobody(SQUATTER, str(path), "3")
    try:
        assert squatter.stdout is not None
        assert squatter.stdout.readline().strip() == "ready"

        # the server will not take over (or serve next to) another user's socket
        with pytest.raises(ControlAccessError) as info:
            asyncio.run(ControlServer(Target(), path).start())
        assert str(info.value).startswith(
            f"the control socket path {path} belongs to uid {NOBODY} (nobody)"
        )

        # the client checks who serves before sending anything
        async def invoke() -> Any:
            async with asyncio.timeout(10):
                return await remote_invoke(path, "shop", "pay", "run", ["card 4242"])

        with pytest.raises(ControlAccessError) as info:
            asyncio.run(invoke())
        assert f"served by uid {NOBODY} (nobody)" in str(info.value)
        out, _ = squatter.communicate(timeout=30)
    finally:
        if squatter.poll() is None:
            squatter.kill()
            squatter.wait()
    assert out.split() == ["got", "0", "done"]  # the arguments never reached it


def fabric_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric.cli", *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def test_cli_refuses_a_squatted_socket_with_one_line(shared_dir: Path, tmp_path: Path) -> None:
    path = shared_dir / "control.sock"
    (tmp_path / "job.wasm").write_bytes(b"")  # never loaded: the socket is checked first
    manifest = tmp_path / "shop.toml"
    manifest.write_text(
        '[[workloads]]\nname = "shop"\n[[workloads.components]]\nname = "job"\nwasm = "job.wasm"\n'
    )
    env = dict(os.environ, FABRIC_CONTROL=str(path))
    squatter = as_nobody(SQUATTER, str(path), "60")
    try:
        assert squatter.stdout is not None
        assert squatter.stdout.readline().strip() == "ready"
        run = fabric_cli("run", str(manifest), env=env)
        invoke = fabric_cli("invoke", "shop", "job", "run", '["secret"]', env=env)
        status = fabric_cli("status", env=env)
    finally:
        squatter.kill()
        out, _ = squatter.communicate()
    assert run.returncode == 2
    assert run.stderr == (
        f"fabric run: the control socket path {path} belongs to uid {NOBODY} (nobody), "
        "not to uid 0 (root); refusing to use it "
        "(remove it, or choose another path with --control or $FABRIC_CONTROL)\n"
    )
    for result, command in ((invoke, "invoke"), (status, "status")):
        assert result.returncode == 2
        assert result.stdout == ""  # no forged result
        assert result.stderr.startswith(f"fabric {command}: the control socket {path} is served")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "got 0" in out and not any(
        line.startswith("got ") and line != "got 0" for line in out.splitlines()
    )


def test_server_refuses_clients_of_other_users(shared_dir: Path) -> None:
    path = shared_dir / "open.sock"

    async def main() -> str:
        server = ControlServer(Target(), path)
        await server.start()
        path.chmod(0o777)  # let the other user reach it at all
        try:
            client = await asyncio.create_subprocess_exec(
                other_python(), "-c", OTHER_CLIENT, str(path),
                user=NOBODY, stdout=subprocess.PIPE, cwd="/",
            )  # fmt: skip
            async with asyncio.timeout(30):
                out, _ = await client.communicate()
            assert server.statistics().requests == 0
            return out.decode()
        finally:
            await server.close()

    reply = asyncio.run(main())
    assert '"kind":"Forbidden"' in reply
    assert f"uid {NOBODY} (nobody) may not use this fabric's control socket" in reply
    assert "status-reply" not in reply


def test_peer_uid_check_with_a_real_socketpair() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert peer_uid(a) == os.getuid()
        check_server_peer(a, "/x.sock")  # ours: accepted
        with pytest.raises(ControlAccessError) as info:
            check_server_peer(a, "/x.sock", expected_uid=4242)
        assert str(info.value) == (
            f"the control socket /x.sock is served by uid {os.getuid()} (root), "
            "not by uid 4242; refusing to talk to it"
        )
