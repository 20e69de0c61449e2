"""Configuration checks and driver selection (no database, no loop)."""

from __future__ import annotations

import msgspec
import pytest

from pools import DatabaseConfig, MySQLPool, PostgresPool, create_pool


def test_defaults_and_ports() -> None:
    pg = DatabaseConfig(kind="postgres")
    assert (pg.resolved_port, pg.acquire_timeout, pg.min_size, pg.max_size) == (5432, 30.0, 1, 10)
    assert DatabaseConfig(kind="mysql").resolved_port == 3306
    assert DatabaseConfig(kind="mysql", port=3307).resolved_port == 3307


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"max_size": 0}, "max_size"),
        ({"min_size": 5, "max_size": 2}, "min_size"),
        ({"acquire_timeout": 0}, "acquire_timeout"),
        ({"max_lifetime": -1.0}, "max_lifetime"),
        ({"kind": "oracle"}, "kind"),
    ],
)
def test_bad_configs_are_rejected(changes: dict[str, object], complaint: str) -> None:
    fields: dict[str, object] = {"kind": "postgres", **changes}
    with pytest.raises(ValueError, match=complaint):
        DatabaseConfig(**fields)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(fields, DatabaseConfig)


def test_create_pool_picks_the_driver() -> None:
    pg = create_pool(DatabaseConfig(kind="postgres", max_size=3))
    my = create_pool(DatabaseConfig(kind="mysql"))
    assert isinstance(pg, PostgresPool) and pg.kind == "postgres"
    assert isinstance(my, MySQLPool) and my.kind == "mysql"
    assert repr(pg) == (
        "<PostgresPool 127.0.0.1:5432/test size=0 idle=0 in_use=0 opening=0 waiting=0 max_size=3>"
    )
    assert pg.statistics().max_size == 3
    with pytest.raises(ValueError, match="kind"):
        MySQLPool(DatabaseConfig(kind="postgres"))


@pytest.mark.parametrize(
    ("min_size", "max_size", "count", "parts"),
    [
        (1, 10, 2, [(1, 5), (0, 5)]),
        (4, 7, 3, [(2, 3), (1, 2), (1, 2)]),
        (0, 2, 2, [(0, 1), (0, 1)]),
        (3, 3, 3, [(1, 1), (1, 1), (1, 1)]),
        (5, 5, 1, [(5, 5)]),
    ],
)
def test_shared_splits_the_sizes_between_processes(
    min_size: int, max_size: int, count: int, parts: list[tuple[int, int]]
) -> None:
    config = DatabaseConfig(kind="postgres", min_size=min_size, max_size=max_size)
    shared = [config.shared(i, count) for i in range(count)]
    assert [(s.min_size, s.max_size) for s in shared] == parts
    assert sum(s.max_size for s in shared) == max_size
    assert sum(s.min_size for s in shared) == min_size
    assert all(s.kind == "postgres" and s.database == config.database for s in shared)


def test_shared_refuses_fewer_connections_than_processes() -> None:
    config = DatabaseConfig(kind="mysql", min_size=0, max_size=2)
    with pytest.raises(ValueError, match="max_size 2 is the total across 3 workers"):
        config.shared(0, 3)
    with pytest.raises(ValueError, match="part 3 of 3"):
        config.shared(3, 3)
