"""One ``except FabricError`` catches what fabric raises, whichever layer it comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.build import BuildError, build_python_guest
from fabric.engine import ComponentLoadError, EngineError
from fabric.errors import FabricError
from fabric.net import NetError, SocketError
from fabric.postgres import PgClusterError, PostgresNotFound
from fabric.runtime import Runtime
from fabric.workload import ManifestError, WorkloadError, loads_manifest
from services.dbpool.client import DbPoolError
from services.dbpool.protocol import ProtocolError


@pytest.mark.parametrize(
    "cls",
    [EngineError, NetError, SocketError, WorkloadError, ManifestError, BuildError,
     PgClusterError, PostgresNotFound, ProtocolError, DbPoolError],
)  # fmt: skip
def test_every_layer_descends_from_fabric_error(cls: type[Exception]) -> None:
    assert issubclass(cls, FabricError)


def test_real_failures_are_caught_as_fabric_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm not really")
    rt = Runtime()
    try:
        with pytest.raises(FabricError) as caught:
            rt.load(str(bad))
        assert isinstance(caught.value, ComponentLoadError)
    finally:
        rt.close()
    with pytest.raises(FabricError) as caught:
        loads_manifest("[[workloads]]\nname = 3\n", path="m.toml")
    assert isinstance(caught.value, ManifestError)
    with pytest.raises(FabricError) as caught:
        build_python_guest(tmp_path)  # no app.py
    assert isinstance(caught.value, BuildError)
