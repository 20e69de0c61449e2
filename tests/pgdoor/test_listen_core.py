"""LISTEN/NOTIFY bookkeeping without a loop: the channel registry, the statement
parser, and the relay answering LISTEN/UNLISTEN in its place."""

from __future__ import annotations

from services.dbpool.pgdoor.listen import (
    ChannelRegistry,
    notification,
    parse_listen,
    parse_notification,
)
from services.dbpool.pgdoor.relay import Relay
from services.dbpool.pgdoor.wire import I32, message


def test_registry_listens_on_the_union_of_channels() -> None:
    reg = ChannelRegistry()
    assert reg.listen(1, "jobs") == ['LISTEN "jobs"']
    assert reg.listen(2, "jobs") == []
    assert reg.listen(2, "jobs") == []
    assert reg.listen(3, 'we"ird') == ['LISTEN "we""ird"']
    assert reg.listeners("jobs") == {1, 2} and reg.listener_count() == 3
    assert reg.unlisten(1, "jobs") == []
    assert reg.unlisten(1, "jobs") == []  # not listening: nothing to do
    assert reg.unlisten(2, "jobs") == ['UNLISTEN "jobs"']
    assert reg.listeners("jobs") == frozenset()
    assert reg.resync() == ['LISTEN "we""ird"']
    assert reg.listen(3, "a") == ['LISTEN "a"']
    assert reg.unlisten(3, "*") == ['UNLISTEN "a"', 'UNLISTEN "we""ird"']
    assert reg.empty and reg.channels_of(3) == frozenset()


def test_registry_drops_a_client_that_left() -> None:
    reg = ChannelRegistry()
    reg.listen(1, "x")
    reg.listen(2, "x")
    reg.listen(2, "y")
    assert reg.drop(2) == ['UNLISTEN "y"']
    assert reg.channels == {"x"} and reg.drop(2) == []


def test_parse_listen_reads_channel_names_as_postgresql_does() -> None:
    assert parse_listen(b"LISTEN Jobs\0") == ("listen", "jobs")
    assert parse_listen(b'  listen "Jobs";  \0') == ("listen", "Jobs")
    assert parse_listen(b'LISTEN "a""b"') == ("listen", 'a"b')
    assert parse_listen(b"UNLISTEN *") == ("unlisten", "*")
    assert parse_listen(b"unlisten q") == ("unlisten", "q")
    assert parse_listen(b"LISTEN a; SELECT 1") is None
    assert parse_listen(b"LISTEN") is None
    assert parse_listen(b"LISTEN 1abc") is None
    assert parse_listen(b"SELECT 1") is None


def test_notification_round_trips() -> None:
    note = notification(42, "jobs", b"payload")
    assert note[:1] == b"A"
    assert parse_notification(note[5:]) == (42, "jobs", b"payload")


class _Session:
    def __init__(self) -> None:
        self.prepared: set[bytes] = set()
        self.dirty = False
        self.status = b"I"


def _q(sql: str) -> bytes:
    return message(b"Q", sql.encode() + b"\0")


def _cc(tag: str) -> bytes:
    return message(b"C", tag.encode() + b"\0")


def _z(status: bytes) -> bytes:
    return message(b"Z", status)


def test_relay_answers_listen_itself_in_its_place() -> None:
    relay = Relay(max_message_size=1 << 20, max_channels=2)
    assert relay.feed_client(_q("LISTEN a"))
    assert relay.local_only
    assert relay.route(None) == b""
    assert bytes(relay.to_client) == _cc("LISTEN") + _z(b"I")
    assert relay.listen_changes == [("listen", "a")]
    relay.to_client.clear()
    relay.listen_changes.clear()
    # behind a statement the server answers: the reply waits for the server's
    session = _Session()
    relay.feed_client(_q("SELECT 1") + _q("LISTEN b") + _q("LISTEN c"))
    assert not relay.local_only
    assert relay.route(session) == _q("SELECT 1")
    assert not relay.to_client
    out = relay.feed_server(_cc("SELECT 1") + _z(b"I"))
    limit = message(b"E", b"")[:1]
    assert out.startswith(_cc("SELECT 1") + _z(b"I") + _cc("LISTEN") + _z(b"I") + limit)
    assert b"54000" in out  # a third channel is past max_channels
    assert relay.listen_changes == [("listen", "b")]
    assert relay.channels == {"a", "b"}


def test_relay_applies_listen_in_a_transaction_at_commit_only() -> None:
    relay = Relay(max_message_size=1 << 20)
    session = _Session()
    for end, applied in (("ROLLBACK", []), ("COMMIT", [("listen", "t")])):
        relay.feed_client(_q("BEGIN"))
        relay.route(session)
        relay.feed_server(_cc("BEGIN") + _z(b"T"))
        relay.feed_client(_q("LISTEN t"))
        assert not relay.local_only  # in a transaction: the session stays leased
        relay.route(session)
        assert bytes(relay.to_client) == _cc("LISTEN") + _z(b"T")
        relay.to_client.clear()
        assert relay.listen_changes == []
        relay.feed_client(_q(end))
        relay.route(session)
        relay.feed_server(_cc(end) + _z(b"I"))
        assert relay.listen_changes == applied


def test_relay_refuses_listen_in_a_failed_transaction() -> None:
    relay = Relay(max_message_size=1 << 20)
    session = _Session()
    relay.feed_client(_q("SELECT 1/0"))
    relay.route(session)
    relay.feed_server(message(b"E", b"C22012\0\0") + _z(b"E"))
    relay.feed_client(_q("LISTEN x"))
    relay.route(session)
    assert b"25P02" in relay.to_client and relay.to_client.endswith(_z(b"E"))
    relay.to_client.clear()
    relay.feed_client(_q("ROLLBACK"))
    relay.route(session)
    relay.feed_server(_cc("ROLLBACK") + _z(b"I"))
    assert relay.listen_changes == []


def test_relay_answers_the_execute_of_a_listen_statement() -> None:
    """asyncpg sends LISTEN through Parse/Bind/Execute: the server parses and binds
    it, the Execute is answered here."""
    relay = Relay(max_message_size=1 << 20)
    session = _Session()
    no_params = I32.pack(0)[2:]
    parse = message(b"P", b"s1\0LISTEN x\0" + no_params)
    describe = message(b"D", b"Ss1\0")
    relay.feed_client(parse + describe + message(b"S"))
    out = relay.route(session)
    assert out.startswith(b"P") and out.endswith(message(b"S"))
    relay.feed_server(b"1\0\0\0\4" + message(b"t", no_params) + b"n\0\0\0\4" + _z(b"I"))
    bind = message(b"B", b"\0s1\0" + no_params + no_params + no_params)
    execute = message(b"E", b"\0" + I32.pack(0))
    relay.feed_client(bind + execute + message(b"S"))
    out = relay.route(session)
    assert execute not in out and out.endswith(message(b"S"))
    got = relay.feed_server(b"2\0\0\0\4" + _z(b"I"))
    assert got == b"2\0\0\0\4" + _cc("LISTEN") + _z(b"I")
    assert relay.listen_changes == [("listen", "x")]
