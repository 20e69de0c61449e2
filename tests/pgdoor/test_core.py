"""The sans-IO parts of the front door, driven directly with protocol bytes: the
startup packet parser, the SCRAM-SHA-256 server, and the transaction relay."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dbpool.pgdoor.relay import ProtocolViolation, Relay
from services.dbpool.pgdoor.scram import ScramError, ScramServer, ScramVerifier
from services.dbpool.pgdoor.wire import (
    BadStartup,
    CancelRequest,
    EncryptionRequest,
    Startup,
    message,
    parse_startup,
)

I16 = struct.Struct("!h")
I32 = struct.Struct("!i")


@dataclass
class Session:
    """The state a relay keeps of the server session it is attached to."""

    prepared: set[bytes] = field(default_factory=set)
    dirty: bool = False
    status: bytes = b"I"


def packet(code: int, rest: bytes = b"") -> bytes:
    return I32.pack(8 + len(rest)) + I32.pack(code) + rest


# ------------------------------------------------------------------ startup


def test_startup_packets_parse() -> None:
    got = parse_startup(packet(196608, b"user\0app\0database\0db\0\0"))
    assert got == Startup(0, {"user": "app", "database": "db"})
    assert parse_startup(packet(80877103)) == EncryptionRequest(80877103)
    assert parse_startup(packet(80877104)) == EncryptionRequest(80877104)
    cancel = parse_startup(packet(80877102, I32.pack(77) + b"abcd"))
    assert cancel == CancelRequest(77, b"abcd")


@pytest.mark.parametrize(
    ("raw", "sqlstate"),
    [
        (I32.pack(7) + b"\0\0\0", "08P01"),
        (I32.pack(20000) + b"\0" * 4, "08P01"),
        (packet(196608, b"user\0app\0"), "08P01"),  # no final terminator
        (packet(196608, b"user\0\0"), "08P01"),  # a name without a value
        (packet(196608, b"database\0x\0\0"), "28000"),
        (packet(1 << 16), "0A000"),
        (packet(80877103, b"x"), "08P01"),
        (packet(196608, b"user\0\xff\0\0"), "08P01"),
    ],
)
def test_bad_startup_packets_are_refused_with_a_sqlstate(raw: bytes, sqlstate: str) -> None:
    with pytest.raises(BadStartup) as info:
        parse_startup(raw)
    assert info.value.sqlstate == sqlstate


# -------------------------------------------------------------------- SCRAM


def test_scram_server_matches_the_rfc_7677_example() -> None:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = ScramVerifier.from_password("pencil", 4096, salt)
    server = ScramServer(verifier, nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    first = server.first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final = server.final(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_scram_server_refuses_a_wrong_proof_and_malformed_messages() -> None:
    verifier = ScramVerifier.from_password("right", 16)
    server = ScramServer(verifier)
    first = server.first(b"n,,n=,r=abc").decode()
    nonce = first.split(",")[0][2:]
    bogus = base64.b64encode(b"\0" * 32).decode()
    with pytest.raises(ScramError, match="password authentication failed"):
        server.final(f"c=biws,r={nonce},p={bogus}".encode())
    with pytest.raises(ScramError, match="channel binding"):
        ScramServer(verifier).first(b"p=tls-server-end-point,,n=,r=abc")
    with pytest.raises(ScramError, match="nonce"):
        s = ScramServer(verifier)
        s.first(b"n,,n=,r=abc")
        s.final(f"c=biws,r=other,p={bogus}".encode())


# -------------------------------------------------------------------- relay


def q(sql: str) -> bytes:
    return message(b"Q", sql.encode() + b"\0")


def parse(name: str, sql: str) -> bytes:
    return message(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + I16.pack(0))


def bind(stmt: str, portal: str = "") -> bytes:
    return message(b"B", portal.encode() + b"\0" + stmt.encode() + b"\0" + I16.pack(0) * 3)


def describe_s(name: str) -> bytes:
    return message(b"D", b"S" + name.encode() + b"\0")


EXECUTE = message(b"E", b"\0" + I32.pack(0))
SYNC = message(b"S")
PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
NO_DATA = message(b"n")
PARAMS = message(b"t", I16.pack(0))


def ready(status: bytes = b"I") -> bytes:
    return message(b"Z", status)


def complete(tag: str) -> bytes:
    return message(b"C", tag.encode() + b"\0")


def server_error(sqlstate: str) -> bytes:
    return message(b"E", b"SERROR\0C" + sqlstate.encode() + b"\0Mboom\0\0")


def kinds(data: bytes) -> bytes:
    """The message type bytes of a stream of complete messages."""
    out, pos = [], 0
    while pos < len(data):
        out.append(data[pos : pos + 1])
        pos += 1 + I32.unpack_from(data, pos + 1)[0]
    return b"".join(out)


def relay() -> Relay:
    return Relay(max_message_size=1 << 20)


def test_simple_queries_pass_through_unchanged_and_release_at_idle() -> None:
    r, s = relay(), Session()
    assert r.feed_client(q("SELECT 1"))
    assert r.route(s) == q("SELECT 1")
    reply = message(b"T", I16.pack(0)) + complete("SELECT 1") + ready()
    assert not r.releasable
    assert r.feed_server(reply[:3]) == b""  # a header split across reads waits
    assert r.feed_server(reply[3:]) == reply
    assert r.releasable and not s.dirty
    r.feed_client(q("BEGIN"))
    r.route(s)
    r.feed_server(complete("BEGIN") + ready(b"T"))
    assert not r.releasable and s.status == b"T"


def test_named_statements_get_server_names_and_are_answered_here_when_prepared() -> None:
    s = Session()
    a = relay()
    a.feed_client(parse("s1", "SELECT $1") + describe_s("s1") + SYNC)
    out = a.route(s)
    assert kinds(out) == b"PDS"
    server_name = out[5 : out.index(b"\0", 5)]
    assert server_name.startswith(b"F") and b"s1" not in out
    assert s.prepared == {server_name}
    a.feed_server(PARSE_COMPLETE + PARAMS + NO_DATA + ready())
    # another client preparing the same text on this session: no Parse is sent,
    # its ParseComplete is made here, in its place before the Describe's replies
    b = relay()
    b.feed_client(parse("mine", "SELECT $1") + describe_s("mine") + SYNC)
    out = b.route(s)
    assert kinds(out) == b"DS"
    assert b.to_client == PARSE_COMPLETE
    b.to_client.clear()
    assert b.feed_server(PARAMS + NO_DATA + ready()) == PARAMS + NO_DATA + ready()
    assert b.releasable


def test_a_statement_is_prepared_again_on_a_session_that_lacks_it() -> None:
    first, second = Session(), Session()
    r = relay()
    r.feed_client(parse("s", "SELECT 1") + SYNC)
    r.route(first)
    r.feed_server(PARSE_COMPLETE + ready())
    r.feed_client(bind("s") + EXECUTE + SYNC)
    out = r.route(second)
    assert kinds(out) == b"PBES"  # the Parse is injected before the Bind
    reply = PARSE_COMPLETE + BIND_COMPLETE + complete("SELECT 1") + ready()
    # the injected Parse's ParseComplete is not the client's
    assert r.feed_server(reply) == BIND_COMPLETE + complete("SELECT 1") + ready()
    assert r.releasable


def test_a_failed_parse_leaves_no_statement_behind() -> None:
    s, r = Session(), relay()
    r.feed_client(parse("bad", "SELEC 1") + describe_s("bad") + SYNC)
    r.route(s)
    out = r.feed_server(server_error("42601") + ready())
    assert kinds(out) == b"EZ"
    assert b"bad" not in r.statements and not s.prepared
    r.feed_client(bind("bad") + EXECUTE + SYNC)
    assert kinds(r.route(s)) == b"S"  # the batch is skipped until Sync
    assert kinds(bytes(r.to_client)) == b"E" and b"C26000" in r.to_client
    r.to_client.clear()
    assert r.feed_server(ready()) == ready()
    assert r.releasable


def test_a_duplicate_parse_is_an_error_and_the_batch_is_skipped() -> None:
    s, r = Session(), relay()
    r.feed_client(parse("s", "SELECT 1") + SYNC)
    r.route(s)
    r.feed_server(PARSE_COMPLETE + ready())
    r.feed_client(parse("s", "SELECT 2") + bind("s") + EXECUTE + SYNC)
    assert kinds(r.route(s)) == b"S"
    assert b"C42P05" in r.to_client


def test_an_extended_batch_holds_the_session_until_sync() -> None:
    s, r = Session(), relay()
    r.feed_client(parse("", "SELECT 1") + message(b"H"))  # Parse, Flush
    r.route(s)
    assert r.feed_server(PARSE_COMPLETE) == PARSE_COMPLETE
    assert not r.awaiting_server and not r.releasable  # the unnamed statement lives there
    r.feed_client(bind("") + EXECUTE + SYNC)
    r.route(s)
    r.feed_server(BIND_COMPLETE + complete("SELECT 1") + ready())
    assert r.releasable


def test_large_rows_pass_through_as_they_arrive() -> None:
    s, r = Session(), relay()
    r.feed_client(q("SELECT big"))
    r.route(s)
    row = message(b"D", I16.pack(1) + I32.pack(100_000) + b"x" * 100_000)
    got = b"".join(r.feed_server(row[i : i + 7000]) for i in range(0, len(row), 7000))
    assert got == row
    assert r.feed_server(complete("SELECT 1") + ready()) == complete("SELECT 1") + ready()
    assert r.releasable


def test_session_changes_mark_the_session_dirty() -> None:
    s, r = Session(prepared={b"Fx"}), relay()
    r.feed_client(q("SET work_mem = '8MB'"))
    r.route(s)
    r.feed_server(complete("SET") + ready())
    assert s.dirty
    s.dirty = False
    r.feed_client(q("DISCARD ALL"))
    r.route(s)
    r.feed_server(complete("DISCARD ALL") + ready())
    assert s.dirty and not s.prepared


def test_refused_statements_and_limits() -> None:
    s, r = Session(), relay()
    r.feed_client(q("  prepare p as select 1"))
    assert r.route(s) == b""
    assert kinds(bytes(r.to_client)) == b"EZ" and b"C0A000" in r.to_client
    small = Relay(max_message_size=100)
    with pytest.raises(ProtocolViolation) as info:
        small.feed_client(q("x" * 200))
    assert info.value.sqlstate == "54000"
    with pytest.raises(ProtocolViolation) as info:
        relay().feed_client(b"Q" + I32.pack(2))
    assert info.value.sqlstate == "08P01"
    limited = Relay(max_message_size=1 << 20, max_statements=1)
    limited.feed_client(parse("a", "SELECT 1") + parse("b", "SELECT 2") + SYNC)
    limited.route(s)
    out = limited.feed_server(PARSE_COMPLETE + ready())
    assert kinds(out) == b"1EZ" and b"C54000" in out


def test_copy_data_sent_ahead_of_the_copy_in_response() -> None:
    s, r = Session(), relay()
    copy = q("COPY t FROM STDIN") + message(b"d", b"1\n") + message(b"c")
    r.feed_client(copy)
    assert r.route(s) == copy
    r.feed_server(message(b"G", b"\0" + I16.pack(0)))
    assert r.awaiting_server  # the client already ended its data: wait for the server
    r.feed_server(complete("COPY 1") + ready())
    assert r.releasable
    # a client that waits for the CopyInResponse before sending
    r.feed_client(q("COPY t FROM STDIN"))
    r.route(s)
    r.feed_server(message(b"G", b"\0" + I16.pack(0)))
    assert r.copy_in and not r.awaiting_server
    r.feed_client(message(b"d", b"2\n") + message(b"c"))
    r.route(s)
    assert r.awaiting_server


def test_a_simple_query_ends_an_extended_batch() -> None:
    s, r = Session(), relay()
    r.feed_client(parse("", "SELECT 1") + message(b"H"))
    r.route(s)
    r.feed_server(PARSE_COMPLETE)
    assert not r.releasable
    r.feed_client(q("SELECT 2"))
    r.route(s)
    r.feed_server(complete("SELECT 1") + ready())
    assert r.releasable


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_replies_split_anywhere_come_out_the_same(cuts: list[int]) -> None:
    # a statement the session has (its ParseComplete made here), one prepared
    # now, rows and a notice, cut into pieces anywhere
    s = Session()
    warm = relay()
    warm.feed_client(parse("w", "SELECT 1") + SYNC)
    warm.route(s)
    warm.feed_server(PARSE_COMPLETE + ready())
    r = relay()
    r.feed_client(parse("a", "SELECT 1") + parse("b", "SELECT 2") + bind("b") + EXECUTE + SYNC)
    r.route(s)
    rows = b"".join(message(b"D", I16.pack(1) + I32.pack(3) + b"abc") for _ in range(5))
    notice = message(b"N", b"SNOTICE\0Mhi\0\0")
    reply = PARSE_COMPLETE + BIND_COMPLETE + notice + rows + complete("SELECT 5") + ready()
    expected = PARSE_COMPLETE + reply
    points = sorted({min(c, len(reply)) for c in cuts})
    pieces = [reply[a:b] for a, b in zip([0, *points], [*points, len(reply)], strict=True)]
    got = bytes(r.to_client) + b"".join(r.feed_server(p) for p in pieces)
    assert got == expected
    assert r.releasable and set(r.statements) == {b"a", b"b"}


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10))
def test_client_bytes_split_anywhere_route_the_same(cuts: list[int]) -> None:
    data = parse("x", "SELECT $1") + bind("x") + EXECUTE + SYNC + q("SELECT 2")
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = relay().feed_client(data)
    assert whole
    r, s, out = relay(), Session(), b""
    for piece in pieces:
        if r.feed_client(piece):
            out += r.route(s)
    expected_relay = relay()
    expected_relay.feed_client(data)
    assert out == expected_relay.route(Session())


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=64), code=st.sampled_from([196608, 80877102, 80877103, 1, -5]))
def test_any_startup_packet_parses_or_is_refused_cleanly(body: bytes, code: int) -> None:
    raw = I32.pack(8 + len(body)) + I32.pack(code) + body
    try:
        parse_startup(raw)
    except BadStartup as exc:
        assert len(exc.sqlstate) == 5


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=24),
            st.sampled_from([SYNC, EXECUTE, q("SELECT 1"), parse("x", "SELECT 1"), bind("x")]),
            st.builds(
                lambda kind, body: kind + I32.pack(len(body) + 4) + body,
                st.sampled_from([b"P", b"B", b"D", b"C", b"E", b"Q", b"d", b"F", b"H"]),
                st.binary(max_size=16),
            ),
        ),
        max_size=8,
    )
)
def test_any_client_bytes_route_or_are_refused_cleanly(chunks: list[bytes]) -> None:
    r, s = Relay(max_message_size=4096), Session()
    try:
        for chunk in chunks:
            if r.feed_client(chunk):
                r.route(s)
    except ProtocolViolation as exc:
        assert exc.sqlstate in ("08P01", "54000")
