"""Finding PostgreSQL server binaries: ``$FABRIC_PG_BIN_DIR``, ``$PATH``, Debian's
``/usr/lib/postgresql/*/bin``, then the ``pgserver`` package."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Literal

import msgspec

from .errors import PostgresNotFound

BinarySource = Literal["system", "pgserver"]

_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")

# ------------------------------------------------------------------ binaries


class PgBinaries(msgspec.Struct, frozen=True):
    """Where the server binaries are and what they are."""

    bin_dir: str
    source: BinarySource
    version: str

    def tool(self, name: str) -> str:
        return str(Path(self.bin_dir) / name)


def _has_server(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in _REQUIRED_BINARIES)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def _system_candidates() -> list[Path]:
    found: list[Path] = []
    env_dir = os.environ.get("FABRIC_PG_BIN_DIR")
    if env_dir:
        found.append(Path(env_dir))
    on_path = shutil.which("initdb")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    found.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True))
    found.append(Path("/usr/local/pgsql/bin"))
    return found


def _pgserver_bin_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def find_pg_binaries(
    prefer: Literal["any", "system", "pgserver"] = "any", bin_dir: Path | None = None
) -> PgBinaries:
    """Locate ``initdb``/``pg_ctl``/``postgres``.

    ``prefer="any"`` tries the system's server first and the ``pgserver``
    package second; ``"system"`` or ``"pgserver"`` restrict the search.
    """
    candidates: list[tuple[Path, BinarySource]] = []
    if bin_dir is not None:
        candidates.append((bin_dir, "system"))
    else:
        if prefer in ("any", "system"):
            candidates.extend((path, "system") for path in _system_candidates())
        bundled = _pgserver_bin_dir()
        if prefer in ("any", "pgserver") and bundled is not None:
            candidates.append((bundled, "pgserver"))
    for path, source in candidates:
        if _has_server(path):
            out = subprocess.run(
                [str(path / "postgres"), "--version"],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            ).stdout
            match = re.search(r"\d+(\.\d+)*", out)
            return PgBinaries(str(path), source, match.group(0) if match else "unknown")
    raise PostgresNotFound(
        "no PostgreSQL server binaries found (looked at $FABRIC_PG_BIN_DIR, initdb on $PATH, "
        "/usr/lib/postgresql/*/bin and the pgserver package); install PostgreSQL's server "
        "package (e.g. apt-get install postgresql) or `pip install pgserver`"
    )
