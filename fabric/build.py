"""Build guest components, cached by content hash outside the repository.

Two kinds of guest are built here:

* Python guests, with componentize-py against the WIT shipped in
  ``fabric/wit`` (worlds of the ``fabric:guests`` package, see
  ``fabric/wit/fabric.wit``). A build costs 10-14 s and ~420 MB, so results are
  cached under :func:`cache_dir` ``/guests`` keyed by a hash of every input
  file, the world, the app module and the componentize-py version. Builds are
  serialized across processes with ``fcntl.flock`` so parallel test processes
  never build at the same time, and outputs are renamed into place atomically.
* WAT guests (core modules or components in text form), converted with
  ``wasmtime.wat2wasm`` in a subprocess, cached the same way.

Every failure is a :class:`BuildError` carrying the tool's stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from fabric.errors import FabricError

__all__ = [
    "BUILD_LOG",
    "WIT_DIR",
    "BuildError",
    "build_python_guest",
    "build_wat_guest",
    "cache_dir",
    "stage_packages",
    "write_cached",
]

#: Name of the log in ``cache_dir()/"guests"`` with one JSON line per build run.
BUILD_LOG = "builds.log"

#: The WIT shipped with fabric: WASI 0.2.0 under ``deps/`` plus ``fabric.wit``.
WIT_DIR: Path = Path(__file__).resolve().parent / "wit"

_KEY_VERSION = "1"  # bump to invalidate every cached build
_SKIP_DIRS = frozenset({"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
_SKIP_SUFFIXES = (".pyc", ".pyo")
_PYTHON_BUILD_TIMEOUT = 900.0
_WAT_BUILD_TIMEOUT = 120.0

# Runs componentize-py's entry point with the interpreter running fabric, so the
# tool is the one installed next to fabric whatever PATH says.
_COMPONENTIZE_PY = (
    "import sys; from componentize_py import script; "
    "sys.argv[0] = 'componentize-py'; sys.exit(script())"
)
# wat2wasm in a fresh process: wasmtime reads WAST_STRICT_COMPONENT_INDICES
# once per process, so only a new process is sure to see it.
_WAT2WASM = """
import sys, wasmtime
try:
    binary = wasmtime.wat2wasm(sys.stdin.buffer.read().decode())
except wasmtime.WasmtimeError as exc:
    sys.exit(str(exc))
sys.stdout.buffer.write(binary)
"""


class BuildError(FabricError):
    """A guest could not be built; ``stderr`` holds the tool's diagnostics."""

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        self.message = message
        self.command = tuple(command)
        self.returncode = returncode
        self.stderr = stderr
        text = message
        if returncode is not None:
            text += f" (exit status {returncode})"
        if stderr.strip():
            text += "\n" + stderr.rstrip()
        super().__init__(text)


def cache_dir() -> Path:
    """The root of fabric's cache: ``$FABRIC_CACHE_DIR`` or ``~/.cache/fabric``.

    Built guests live in its ``guests/`` subdirectory.
    """
    env = os.environ.get("FABRIC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fabric"


def _guests_dir() -> Path:
    path = cache_dir() / "guests"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _iter_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield ``(relative posix path, path)`` for every input file under ``root``."""
    if root.is_file():
        yield root.name, root
        return
    if not root.is_dir():
        raise BuildError(f"input path does not exist: {root}")
    entries: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in filenames:
            if name.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(dirpath, name)
            entries.append((path.relative_to(root).as_posix(), path))
    yield from sorted(entries)


def _hash_tree(digest: hashlib._Hash, label: str, root: Path) -> None:
    digest.update(f"\0tree\0{label}\0".encode())
    for rel, path in _iter_files(root):
        data = path.read_bytes()
        digest.update(f"\0file\0{rel}\0{len(data)}\0".encode())
        digest.update(data)


def _componentize_py_version() -> str:
    try:
        return importlib.metadata.version("componentize-py")
    except importlib.metadata.PackageNotFoundError as exc:
        raise BuildError("componentize-py is not installed") from exc


def _run(
    command: Sequence[str],
    *,
    what: str,
    timeout: float,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> bytes:
    try:
        proc = subprocess.run(
            list(command),
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
            input=stdin,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise BuildError(
            f"{what} timed out after {timeout:.0f} s", command=command, stderr=stderr
        ) from exc
    except OSError as exc:
        raise BuildError(f"{what} could not be started: {exc}", command=command) from exc
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace")
        if not stderr.strip():
            stderr = proc.stdout.decode(errors="replace")
        raise BuildError(
            f"{what} failed", command=command, returncode=proc.returncode, stderr=stderr
        )
    out: bytes = proc.stdout
    return out


def _cached(guests: Path, out: Path, key: str) -> Path | None:
    """The cached build for ``key``: ``out`` or one made from a copy elsewhere."""
    if out.is_file():
        return out
    return next(guests.glob(f"*-{key}.wasm"), None)


def _log_build(guests: Path, out: Path, **details: object) -> None:
    """Append one JSON line per build actually run to ``guests/builds.log``.

    Called with the build lock held, so concurrent builders do not interleave.
    """
    record = {"output": out.name, "size": out.stat().st_size, "at": time.time(), **details}
    with open(guests / BUILD_LOG, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "guest"


def build_python_guest(
    src_dir: Path,
    *,
    world: str = "command",
    app: str = "app",
    wit_dir: Path | None = None,
    extra_paths: Sequence[Path] = (),
) -> Path:
    """Build the Python app module ``app`` in ``src_dir`` into a component.

    ``world`` names a world of the root package in ``wit_dir`` (default
    :data:`WIT_DIR`, whose worlds are ``command``, ``cron-service``,
    ``job-component`` and ``composer``) or a fully qualified one such as
    ``wasi:cli/command@0.2.0``. ``extra_paths`` are further Python path entries
    (for third-party pure-Python packages; see :func:`stage_packages`).

    Returns the path of the cached ``.wasm``; a cache hit costs one hash of the
    inputs. Raises :class:`BuildError` when componentize-py fails.
    """
    src = Path(src_dir).resolve()
    wit = Path(wit_dir).resolve() if wit_dir is not None else WIT_DIR
    extras = [Path(p).resolve() for p in extra_paths]
    if not (src / f"{app}.py").is_file() and not (src / app / "__init__.py").is_file():
        raise BuildError(f"no module {app!r} in {src}")

    digest = hashlib.sha256()
    digest.update(f"python-guest\0{_KEY_VERSION}\0{_componentize_py_version()}\0".encode())
    digest.update(f"world\0{world}\0app\0{app}\0".encode())
    _hash_tree(digest, "src", src)
    _hash_tree(digest, "wit", wit)
    for index, extra in enumerate(extras):
        _hash_tree(digest, f"extra{index}", extra)
    key = digest.hexdigest()[:32]

    guests = _guests_dir()
    out = guests / f"{_safe_name(src.name)}-{_safe_name(app)}-{key}.wasm"
    if (hit := _cached(guests, out, key)) is not None:
        return hit
    # One componentize-py build at a time across every process on the machine:
    # each takes ~420 MB and a core for 10-14 s.
    with _flock(guests / "python-build.lock"):
        if (hit := _cached(guests, out, key)) is not None:
            return hit
        fd, tmp_name = tempfile.mkstemp(prefix=f".{key}-", suffix=".wasm.tmp", dir=guests)
        os.close(fd)
        tmp = Path(tmp_name)
        command = [
            sys.executable,
            "-c",
            _COMPONENTIZE_PY,
            "-d",
            str(wit),
            "-w",
            world,
            "componentize",
            "-p",
            str(src),
        ]
        for extra in extras:
            command += ["-p", str(extra)]
        command += [app, "-o", str(tmp)]
        try:
            env = dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")
            started = time.monotonic()
            _run(
                command,
                env=env,
                what=f"componentize-py ({src.name}/{app}, world {world})",
                timeout=_PYTHON_BUILD_TIMEOUT,
                cwd=src,
            )
            if tmp.stat().st_size == 0:
                raise BuildError("componentize-py produced an empty file", command=command)
            os.replace(tmp, out)
            _log_build(
                guests, out, src=str(src), world=world, app=app, seconds=time.monotonic() - started
            )
        finally:
            tmp.unlink(missing_ok=True)
    return out


def build_wat_guest(wat: str | Path) -> Path:
    """Convert WAT text (a core module or a component) into a cached binary.

    ``wat`` is either the text itself or a :class:`~pathlib.Path` to a ``.wat``
    file. Component text may use the legacy flat index syntax
    (``WAST_STRICT_COMPONENT_INDICES=0`` is set for the conversion).
    """
    if isinstance(wat, Path):
        try:
            text = wat.read_text()
        except OSError as exc:
            raise BuildError(f"cannot read {wat}: {exc}") from exc
        stem = _safe_name(wat.stem)
    else:
        text = wat
        stem = "wat"
    digest = hashlib.sha256()
    digest.update(f"wat-guest\0{_KEY_VERSION}\0{_wasmtime_version()}\0".encode())
    digest.update(text.encode())
    key = digest.hexdigest()[:32]

    guests = _guests_dir()
    out = guests / f"{stem}-{key}.wasm"
    if out.is_file():
        return out
    with _flock(guests / "wat-build.lock"):
        if out.is_file():
            return out
        env = dict(os.environ, WAST_STRICT_COMPONENT_INDICES="0")
        binary = _run(
            [sys.executable, "-c", _WAT2WASM],
            what=f"wat2wasm ({stem})",
            timeout=_WAT_BUILD_TIMEOUT,
            stdin=text.encode(),
            env=env,
        )
        write_cached(out, binary, key)
        _log_build(guests, out, src=str(wat) if isinstance(wat, Path) else "<text>")
    return out


def write_cached(out: Path, data: bytes, key: str) -> None:
    """Write a build's ``data`` to ``out`` in the cache atomically: to a temporary
    file beside it, then renamed, so a reader never sees half a component."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{key}-", suffix=".wasm.tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _wasmtime_version() -> str:
    try:
        return importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError as exc:
        raise BuildError("wasmtime (wasmtime-py) is not installed") from exc


def stage_packages(names: Sequence[str]) -> Path:
    """Copy installed top-level packages into a small cached path entry.

    Pass the result in ``extra_paths`` of :func:`build_python_guest` instead of
    a whole ``site-packages`` (which would make every cache check hash hundreds
    of megabytes). Only pure-Python packages work inside a guest.
    """
    sources: list[tuple[str, Path]] = []
    for name in sorted(set(names)):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise BuildError(f"package {name!r} is not installed")
        origin = Path(spec.origin)
        if spec.submodule_search_locations:
            sources.append((name, origin.parent))
        else:
            sources.append((origin.name, origin))
    digest = hashlib.sha256()
    digest.update(f"staged\0{_KEY_VERSION}\0".encode())
    for name, path in sources:
        _hash_tree(digest, name, path)
    key = digest.hexdigest()[:32]
    root = cache_dir() / "packages"
    dest = root / f"{_safe_name('-'.join(names))}-{key}"
    if dest.is_dir():
        return dest
    with _flock(root / "stage.lock"):
        if dest.is_dir():
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            for name, path in sources:
                if path.is_dir():
                    shutil.copytree(
                        path, tmp / name, ignore=shutil.ignore_patterns(*_SKIP_DIRS, "*.pyc")
                    )
                else:
                    shutil.copy2(path, tmp / name)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
