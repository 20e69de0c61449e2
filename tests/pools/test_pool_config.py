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
