"""wasi:filesystem: preopened host directories as real guests see them.

Two guests: ``tests/guests/fsprobe`` calls the WIT functions directly and
prints one ``key=value`` fact per call (the error-code name on failure), and
the CLI guest (``tests/guests/cli``) does the same work through CPython's
``os``/``open`` over wasi-libc.  The wasmtime CLI is the reference: where it
can run the same mode (read-write preopens only), fabric must print exactly
the facts wasmtime prints.  Every test also checks the host side (what the
guest left on disk) and that no host file descriptor outlives its guest.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from fabric.build import WIT_DIR, build_python_guest
from fabric.engine import Err, GuestTrap
from fabric.runtime import Runtime
from fabric.wasi import Preopen, WasiConfig, WasiCtx
from fabric.wasi.filesystem import (
    DESCRIPTOR_METHODS,
    ERROR_CODES,
    Descriptor,
    error_code,
    filesystem_error_code,
    interfaces,
    statistics,
)
from fabric.wasi.filesystem.paths import MAX_SYMLINK_EXPANSIONS, resolve
from fabric.wasi.io import IoError
from tests.guestlib import GUESTS
from tests.reference.wasmtime_cli import parse_facts, run_guest

Facts = dict[str, str]

@pytest.fixture(scope="session")
def fsprobe_guest() -> Path:
    return build_python_guest(GUESTS / "fsprobe")


@pytest.fixture(autouse=True)
def _no_descriptor_leaks() -> Iterator[None]:
    """Every host file descriptor opened for a guest is closed when the guest ends."""
    before = statistics().open_fds
    yield
    assert statistics().open_fds == before


# --- running guests ---------------------------------------------------------------
async def run_fabric(
    runtime: Runtime, guest: Path, *args: str, preopens: list[Preopen] | None = None
) -> tuple[int, Facts, str]:
    out, err = bytearray(), bytearray()
    ctx = WasiCtx(
        WasiConfig(args=["guest", *args], preopens=preopens or []),
        stdout=out.extend,
        stderr=err.extend,
    )
    code = await runtime.run_command(runtime.load(guest), ctx, timeout=120)
    return code, parse_facts(out.decode()), err.decode()


async def run_wasmtime(guest: Path, *args: str, dirs: Mapping[Path | str, str]) -> Facts:
    result = await asyncio.to_thread(run_guest, guest, *args, dirs=dirs, network=False)
    return result.check().facts


def rw(root: Path, guest: str = "/data") -> list[Preopen]:
    return [Preopen(host=str(root), guest=guest)]


def ro(root: Path, guest: str = "/data") -> list[Preopen]:
    return [Preopen(host=str(root), guest=guest, readonly=True)]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for directories and links)."""
    tree: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            tree[rel] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return tree


def make_rw_tree(base: Path) -> Path:
    root = base / "root"
    root.mkdir(parents=True)
    (root / "input.txt").write_text("from the host\n")
    return root


def make_escape_tree(base: Path) -> Path:
    """A preopen whose links try to reach files next to it."""
    root = base / "root"
    root.mkdir(parents=True)
    (base / "outside.txt").write_text("outside secret\n")
    (base / "secret").mkdir()
    (base / "secret" / "secret.txt").write_text("deep secret\n")
    (root / "inside.txt").write_text("inside\n")
    (root / "inner").mkdir()
    os.symlink(base / "outside.txt", root / "abs-link")
    os.symlink("../outside.txt", root / "rel-link")
    os.symlink("../secret", root / "dir-link")
    os.symlink("rel-link", root / "chain-link")
    os.symlink("loop-link", root / "loop-link")
    os.symlink("inner/../inside.txt", root / "inside-link")
    return root


def make_ro_tree(base: Path) -> Path:
    root = base / "root"
    root.mkdir(parents=True)
    (root / "hello.txt").write_text("hello read-only\n")
    (root / "sub").mkdir()
    return root


# --- preopens -------------------------------------------------------------------
async def test_no_preopens_by_default(runtime: Runtime, fsprobe_guest: Path) -> None:
    code, facts, _ = await run_fabric(runtime, fsprobe_guest, "preopens")
    assert code == 0
    assert facts["count"] == "0"


async def test_preopens_listed_with_permissions(
    runtime: Runtime, fsprobe_guest: Path, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    preopens = [*rw(tmp_path / "a", "/data"), *ro(tmp_path / "b", "/config")]
    code, facts, _ = await run_fabric(runtime, fsprobe_guest, "preopens", preopens=preopens)
    assert code == 0
    assert facts["count"] == "2"
    assert facts["preopen0"] == "/data:directory:mutate-directory,read"
    assert facts["preopen1"] == "/config:directory:read"


async def test_missing_host_directory_traps(
    runtime: Runtime, fsprobe_guest: Path, tmp_path: Path
) -> None:
    with pytest.raises(GuestTrap, match=r"preopen .*missing.*No such file"):
        await run_fabric(runtime, fsprobe_guest, "preopens", preopens=rw(tmp_path / "missing"))


# --- the WIT functions, compared with wasmtime -------------------------------------
async def test_read_write_matches_wasmtime(
    runtime: Runtime, fsprobe_guest: Path, tmp_path: Path
) -> None:
    ref_root = make_rw_tree(tmp_path / "wasmtime")
    expected = await run_wasmtime(fsprobe_guest, "rw", "/data", dirs={str(ref_root): "/data"})
    root = make_rw_tree(tmp_path / "fabric")
    code, facts, err = await run_fabric(runtime, fsprobe_guest, "rw", "/data", preopens=rw(root))
    assert code == 0, err
    assert facts == expected

    # What a user of the API notices, spelled out (wasmtime agrees on all of it).
    assert facts["host_file_read"] == "from the host"
    assert facts["read"] == "hello world:False"
    assert facts["read_at_end"] == "b'':True"
    assert facts["stat"] == "regular-file:21:1"  # the write at offset 20 extended the file
    assert facts["size_after_set_size"] == "5"
    assert facts["atime"] == "1000000.500"
    assert facts["stream_read"] == "hello there!"
    assert facts["big_size"] == str(256 * 1024)
    assert facts["big_read_ok"] == "True"
    assert facts["ro_stream_write"] == "ERR:stream:bad-descriptor"
    assert facts["readdir_sub"] == "inner:directory,s.txt:regular-file"
    assert facts["open_link_nofollow"] == "ERR:loop"
    assert facts["open_loop"] == "ERR:loop"
    assert facts["symlink_absolute"] == "ERR:not-permitted"
    assert facts["rmdir_nonempty"] == "ERR:not-empty"
    assert facts["unlink_dir"] == "ERR:is-directory"
    assert facts["dir_read_stream"] == "ERR:is-directory"
    assert facts["dir_read"] == "ERR:bad-descriptor"
    assert facts["sync_flag"] == "ERR:unsupported"

    # The host sees what the guest wrote, and the same tree as under wasmtime.
    tree = snapshot(root)
    assert tree == snapshot(ref_root)
    assert tree["input.txt"] == b"from the host\nappended by the guest\n"
    assert tree["kept.txt"] == b"written by the guest\n"
    assert tree["kept-dir/nested.bin"] == bytes(range(256))
    # "sub/inner/" with its trailing slash is not removed (invalid, as cap-std), so sub stays.
    assert facts["rmdir_inner"] == "ERR:invalid"
    assert sorted(tree) == [
        "a.txt",
        "input.txt",
        "kept-dir",
        "kept-dir/nested.bin",
        "kept.txt",
        "sub",
        "sub/inner",
    ]


async def test_escapes_refused(runtime: Runtime, fsprobe_guest: Path, tmp_path: Path) -> None:
    ref_root = make_escape_tree(tmp_path / "wasmtime")
    expected = await run_wasmtime(fsprobe_guest, "escape", "/data", dirs={str(ref_root): "/data"})
    base = tmp_path / "fabric"
    root = make_escape_tree(base)
    before = snapshot(base)
    code, facts, err = await run_fabric(
        runtime, fsprobe_guest, "escape", "/data", preopens=rw(root)
    )
    assert code == 0, err
    assert facts == expected

    escapes = ["dotdot", "dotdot_deep", "absolute", "dot_then_dotdot"]
    escapes += ["abs_link", "rel_link", "dir_link_inner", "chain_link"]
    for key in escapes:
        assert facts[f"open:{key}"] == "ERR:not-permitted", key
        assert facts[f"stat:{key}"] == "ERR:not-permitted", key
    assert facts["open:loop_link"] == "ERR:loop"
    # Links and ".." that stay inside work.
    assert facts["open:inside_link"] == "inside"
    assert facts["open:inside_via_dotdot"] == "inside"
    # An escaping link can be looked at, not followed; an absolute target stays hidden.
    assert facts["stat_nofollow:abs_link"] == "symbolic-link"
    assert facts["readlink:abs_link"] == "ERR:not-permitted"
    assert facts["readlink:rel_link"] == "../outside.txt"
    for key in ("mkdir:dotdot", "create:dotdot", "create:dir_link", "symlink:absolute"):
        assert facts[key] == "ERR:not-permitted", key
    for key in ("unlink:out", "unlink:dir_link", "sub_dotdot", "sub_dotdot_file"):
        assert facts[key] == "ERR:not-permitted", key
    assert facts["sub_dot"] == "directory"
    # Nothing outside (or inside) the preopen changed.
    assert snapshot(base) == before


async def test_links_renames_same_object_match_wasmtime(
    runtime: Runtime, fsprobe_guest: Path, tmp_path: Path
) -> None:
    ref_root = make_rw_tree(tmp_path / "wasmtime")
    expected = await run_wasmtime(fsprobe_guest, "links", "/data", dirs={str(ref_root): "/data"})
    assert expected["hardlink_count"] == "2"
    assert expected["rename_escape"] == "ERR:not-permitted"
    root = make_rw_tree(tmp_path / "fabric")
    code, facts, err = await run_fabric(runtime, fsprobe_guest, "links", "/data", preopens=rw(root))
    assert code == 0, err
    assert facts == expected
    assert snapshot(root) == snapshot(ref_root)


# --- read-only preopens -------------------------------------------------------------
async def test_read_only_preopen_refuses_writes(
    runtime: Runtime, fsprobe_guest: Path, tmp_path: Path
) -> None:
    root = make_ro_tree(tmp_path)
    before = snapshot(root)
    mtime = (root / "hello.txt").stat().st_mtime_ns
    code, facts, err = await run_fabric(runtime, fsprobe_guest, "ro", "/data", preopens=ro(root))
    assert code == 0, err
    # Reading works.
    assert facts["dir_flags"] == "read"
    assert facts["read"] == facts["stream_read"] == "hello read-only"
    assert facts["stat"] == "regular-file:16:1"
    assert facts["readdir"] == "hello.txt:regular-file,sub:directory"
    assert facts["sub_flags"] == "read"
    # Every mutation is refused before the kernel sees it, as wasmtime does.
    refused = ["open_write", "open_create", "open_truncate", "write", "write_stream"]
    refused += ["append_stream", "set_size", "set_times", "mkdir", "unlink", "rmdir"]
    refused += ["symlink", "set_times_at", "sub_create", "sub_mkdir"]
    for key in refused:
        assert facts[key] == "ERR:not-permitted", key
    assert snapshot(root) == before
    assert (root / "hello.txt").stat().st_mtime_ns == mtime


async def test_read_only_preopen_refuses_rename_and_link(
    runtime: Runtime, fsprobe_guest: Path, tmp_path: Path
) -> None:
    root = make_ro_tree(tmp_path)
    before = snapshot(root)
    code, facts, err = await run_fabric(
        runtime, fsprobe_guest, "ro-links", "/data", preopens=ro(root)
    )
    assert code == 0, err
    assert facts["rename"] == facts["link"] == "ERR:not-permitted"
    assert snapshot(root) == before


# --- CPython's os module over wasi-libc (the CLI guest) ------------------------------
def make_cli_tree(base: Path) -> Path:
    root = base / "root"
    (root / "d").mkdir(parents=True)
    (root / "f.txt").write_bytes(b"data\n")
    (root / "d" / "x").write_bytes(b"x")
    return root


async def test_python_guest_reads_files(runtime: Runtime, cli_guest: Path, tmp_path: Path) -> None:
    ref_root = make_cli_tree(tmp_path / "wasmtime")
    expected = await run_wasmtime(cli_guest, "fs-read", "/data", dirs={str(ref_root): "/data"})
    root = make_cli_tree(tmp_path / "fabric")
    code, facts, err = await run_fabric(runtime, cli_guest, "fs-read", "/data", preopens=rw(root))
    assert code == 0, err
    assert facts == {k: v for k, v in expected.items() if k != "argv0"}
    assert facts["entries"] == "d,f.txt"
    assert facts["dir.d"] == "x"
    digest = hashlib.sha256(b"data\n").hexdigest()
    assert facts["file.f.txt"] == f"5:{digest}"
    assert facts["write_probe"] == "ok"


async def test_python_guest_read_only_preopen(
    runtime: Runtime, cli_guest: Path, tmp_path: Path
) -> None:
    root = make_cli_tree(tmp_path)
    before = snapshot(root)
    code, facts, err = await run_fabric(runtime, cli_guest, "fs-read", "/data", preopens=ro(root))
    assert code == 0, err
    assert facts["entries"] == "d,f.txt"
    assert facts["write_probe"] == "EPERM"
    assert snapshot(root) == before


async def test_python_guest_escapes(runtime: Runtime, cli_guest: Path, tmp_path: Path) -> None:
    root = make_cli_tree(tmp_path)
    (tmp_path / "outside").write_text("secret")
    code, facts, err = await run_fabric(runtime, cli_guest, "fs-escape", "/data", preopens=rw(root))
    assert code == 0, err
    assert facts["dotdot"] == facts["dotdot_deep"] == "EPERM"
    assert facts["dotdot_inside"] == "ENOENT"
    # wasi-libc finds no preopen for "/etc" or "/": the host is not even asked.
    assert facts["absolute"] == facts["listdir_root"] == "ENOENT"
    assert sorted(os.listdir(root)) == ["d", "f.txt"]


async def test_python_guest_writes_files(runtime: Runtime, cli_guest: Path, tmp_path: Path) -> None:
    ref_root = make_cli_tree(tmp_path / "wasmtime")
    expected = await run_wasmtime(cli_guest, "fs-write", "/data", dirs={str(ref_root): "/data"})
    root = make_cli_tree(tmp_path / "fabric")
    code, facts, err = await run_fabric(runtime, cli_guest, "fs-write", "/data", preopens=rw(root))
    assert code == 0, err
    assert facts == {k: v for k, v in expected.items() if k != "argv0"}
    assert facts["walk"] == "b.txt,bin.dat,x/y/deep.txt"
    assert facts["mkdir_again"] == "EEXIST"
    assert (root / "result.txt").read_text() == "written by the guest\n"
    assert snapshot(root) == snapshot(ref_root)


# --- host-side pieces without a guest --------------------------------------------
def test_non_utf8_names_cannot_cross(tmp_path: Path) -> None:
    os.close(os.open(os.fsencode(tmp_path) + b"/bad\xff", os.O_CREAT | os.O_WRONLY))
    (tmp_path / "good").write_text("")
    root = Descriptor.open_directory(str(tmp_path), readonly=False)
    try:
        stream = root.read_directory()
        seen: list[str] = []
        while True:
            try:
                entry = stream.read_directory_entry()
            except Err as e:
                seen.append(f"ERR:{e.value}")
                continue
            if entry is None:
                break
            seen.append(entry["name"])
        assert sorted(seen) == ["ERR:illegal-byte-sequence", "good"]
    finally:
        root.close()


def test_symlink_expansions_are_bounded(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("t")
    previous = "target"
    for i in range(MAX_SYMLINK_EXPANSIONS + 1):
        os.symlink(previous, tmp_path / f"l{i}")
        previous = f"l{i}"
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with resolve(fd, f"l{MAX_SYMLINK_EXPANSIONS - 1}", follow=True) as r:
            assert r.name == "target"
        with pytest.raises(Err) as info:
            resolve(fd, f"l{MAX_SYMLINK_EXPANSIONS}", follow=True)
        assert info.value.value == "loop"
    finally:
        os.close(fd)


def test_os_errors_map_to_wit_codes() -> None:
    assert error_code(OSError(errno.ENOENT, "x")) == "no-entry"
    assert error_code(OSError(errno.EROFS, "x")) == "read-only"
    assert error_code(OSError(errno.EXDEV, "x")) == "cross-device"
    assert error_code(OSError(errno.ENOTSUP, "x")) == "unsupported"
    assert error_code(OSError(errno.ECHILD, "x")) == "io"  # no WIT case: io, as wasmtime
    assert error_code(OSError("no errno")) == "io"
    codes = {error_code(OSError(n, "x")) for n in errno.errorcode}
    assert codes <= ERROR_CODES


def test_filesystem_error_code_only_for_filesystem_errors() -> None:
    assert filesystem_error_code(IoError("pwrite failed", "bad-descriptor")) == "bad-descriptor"
    assert filesystem_error_code(IoError("reset", "connection-reset")) is None
    assert filesystem_error_code(IoError("no code")) is None


def test_every_wit_function_is_provided() -> None:
    """The host implements each function of wasi:filesystem/types and preopens."""
    wit = (WIT_DIR / "deps" / "filesystem" / "types.wit").read_text()
    block = wit[wit.index("resource descriptor {") : wit.index("resource directory-entry-stream")]
    methods = set(re.findall(r"^\s*([a-z-]+): func\(", block, re.MULTILINE))
    assert methods == set(DESCRIPTOR_METHODS)
    ifaces = {i.base: i for i in interfaces("0.2.9")}
    provided = set(ifaces["wasi:filesystem/types"].funcs)
    assert provided == {f"[method]descriptor.{m}" for m in methods} | {
        "[method]directory-entry-stream.read-directory-entry",
        "filesystem-error-code",
    }
    assert set(ifaces["wasi:filesystem/types"].resources) == {
        "descriptor",
        "directory-entry-stream",
    }
    assert set(ifaces["wasi:filesystem/preopens"].funcs) == {"get-directories"}
    # Every error code the WIT declares, and only those.
    enum = wit[wit.index("enum error-code {") :]
    enum = enum[: enum.index("}")]
    declared = set(re.findall(r"^\s*([a-z-]+),?\s*$", enum, re.MULTILINE))
    assert declared == ERROR_CODES
