"""The MySQL front door's sans-IO core, without a loop or a socket: framing,
response scanning, the handshake, scrambles (checked against PyMySQL's own
client-side functions), and the statements it answers itself."""

from __future__ import annotations

import struct

import pytest
from pymysql import _auth

from services.dbpool.mysql.handshake import (
    CACHING_SHA2,
    NATIVE,
    HandshakeResponse,
    SslRequest,
    greeting,
    parse_response,
    verify,
)
from services.dbpool.mysql.statements import (
    EndTransaction,
    Forward,
    SetAutocommit,
    SetNames,
    Use,
    classify,
)
from services.dbpool.mysql.wire import (
    MAX_PAYLOAD,
    MalformedPacket,
    PacketReader,
    PacketTooLarge,
    ResponseKind,
    ResponseScanner,
    eof_packet,
    err_packet,
    frame,
    lenenc_int,
    ok_packet,
)

NONCE = bytes(range(1, 21))

# -------------------------------------------------------------------- framing


def test_packet_reader_cuts_and_joins_packets() -> None:
    reader = PacketReader(max_payload=64 * 1024 * 1024)
    data = frame(0, b"\x03SELECT 1") + frame(0, b"\x0e")
    for i in range(len(data)):  # one byte at a time
        reader.feed(data[i : i + 1])
    assert reader.next_packet() == (0, b"\x03SELECT 1")
    assert reader.next_packet() == (0, b"\x0e")
    assert reader.next_packet() is None
    big = b"\x03" + b"x" * MAX_PAYLOAD  # continued over two packets
    wire = frame(0, big)
    assert wire[:4] == b"\xff\xff\xff\x00" and wire[4 + MAX_PAYLOAD : 8 + MAX_PAYLOAD] == (
        b"\x01\x00\x00\x01"
    )
    reader.feed(wire)
    assert reader.next_packet() == (0, big)


def test_packet_reader_refuses_oversized_packets_from_the_header() -> None:
    reader = PacketReader(max_payload=1024)
    reader.feed(struct.pack("<I", 5000 | 3 << 24) + b"\x03abc")
    with pytest.raises(PacketTooLarge) as info:
        reader.next_packet()
    assert info.value.seq == 3
    assert reader.remaining() == 5000 - 4


# ------------------------------------------------------------------- scanning


def _coldef(name: bytes) -> bytes:
    return frame(2, b"\x03def" + b"\x00" * 3 + bytes((len(name),)) + name + b"\x00" * 14)


def result_set(rows: list[bytes], status: int = 0x0002, more: bool = False) -> bytes:
    flags = status | (0x0008 if more else 0)
    parts = [frame(1, lenenc_int(1)), _coldef(b"a"), eof_packet(3, status)]
    parts += [frame(4 + i, lenenc_int(len(r)) + r) for i, r in enumerate(rows)]
    parts.append(eof_packet(4 + len(rows), flags))
    return b"".join(parts)


def scan(kind: ResponseKind, data: bytes, step: int | None = None) -> tuple[ResponseScanner, int]:
    scanner = ResponseScanner(kind)
    used = 0
    step = step or len(data)
    while used < len(data) and not scanner.done:
        used += scanner.feed(data[used : used + step])
    return scanner, used


@pytest.mark.parametrize("step", [None, 1, 3, 7])
def test_scanner_follows_a_result_set_fed_in_any_pieces(step: int | None) -> None:
    # a row starting with 0xFE (a long length) is not an EOF; neither is a long 0xFE row
    rows = [b"1", b"\xfe" * 20, b"x" * 300]
    data = result_set(rows, status=0x0003)
    scanner, used = scan(ResponseKind.RESULT, data + b"NEXT", step)
    assert scanner.done and used == len(data)
    assert scanner.status == 0x0003 and scanner.error is None


def test_scanner_reads_a_response_split_anywhere_as_it_reads_it_whole() -> None:
    rows = [b"1", b"\xfe" * 20, b"x" * 300, b"\xff" * 3]
    data = result_set(rows, more=True) + result_set([b"b"], status=0x0001) + b"NEXT"
    whole, used = scan(ResponseKind.RESULT, data)
    assert (used, whole.status, whole.result_sets) == (len(data) - 4, 0x0001, 2)
    for cut in range(1, len(data)):
        scanner = ResponseScanner(ResponseKind.RESULT)
        got = scanner.feed(data[:cut])
        if not scanner.done:
            assert got == cut  # a scanner that is not done takes all it is given
            got += scanner.feed(data[cut:])
        assert (got, scanner.done, scanner.status, scanner.result_sets) == (
            used,
            True,
            0x0001,
            2,
        ), cut


def test_scanner_handles_ok_err_and_several_results() -> None:
    ok = ok_packet(1, 0x0001, affected=3)
    scanner, used = scan(ResponseKind.RESULT, ok + ok)
    assert (scanner.done, used, scanner.status) == (True, len(ok), 0x0001)
    err = err_packet(1, 1146, "42S02", "Table 't' doesn't exist")
    scanner, _ = scan(ResponseKind.RESULT, err)
    assert scanner.done and scanner.error == (1146, "Table 't' doesn't exist")
    assert scanner.status is None
    both = result_set([b"a"], more=True) + result_set([b"b"]) + ok_packet(1, 2)
    scanner, used = scan(ResponseKind.RESULT, both, 5)
    assert used == len(both) - len(ok_packet(1, 2)) and scanner.result_sets == 2
    # a row error ends the response too
    broken = (
        frame(1, b"\x01") + _coldef(b"a") + eof_packet(3, 2) + err_packet(4, 1317, "70100", "x")
    )
    scanner, used = scan(ResponseKind.RESULT, broken)
    assert scanner.done and used == len(broken) and scanner.error == (1317, "x")


def test_scanner_follows_a_prepare_response() -> None:
    head = frame(1, b"\x00" + struct.pack("<IHHBH", 9, 1, 2, 0, 0))
    defs = _coldef(b"?") * 2 + eof_packet(4, 2) + _coldef(b"c") + eof_packet(6, 2)
    scanner, used = scan(ResponseKind.PREPARE, head + defs + b"more", 2)
    assert scanner.done and used == len(head + defs)
    assert scanner.prepared == (9, 1, 2)
    bare = frame(1, b"\x00" + struct.pack("<IHHBH", 4, 0, 0, 0, 0))
    scanner, used = scan(ResponseKind.PREPARE, bare)
    assert scanner.done and scanner.prepared == (4, 0, 0)


def test_scanner_refuses_what_no_response_looks_like() -> None:
    with pytest.raises(MalformedPacket):
        scan(ResponseKind.SIMPLE, frame(1, b"\x01\x02"))
    with pytest.raises(MalformedPacket):  # LOCAL INFILE requests are never enabled
        scan(ResponseKind.RESULT, frame(1, b"\xfbfile"))
    huge_ok = frame(1, b"\x00" + b"\x00" * (1 << 20))  # an OK is never 1 MiB long
    for step in (None, 5):  # whole in one piece, or arriving in pieces
        with pytest.raises(MalformedPacket):
            scan(ResponseKind.SIMPLE, huge_ok, step)


# ------------------------------------------------------------------ handshake


def _response(
    user: bytes,
    auth: bytes,
    *,
    db: bytes | None = b"test",
    plugin: bytes = b"mysql_native_password",
    caps: int = 0x200 | 0x8000 | 0x80000 | 0x200000 | 0x8,
) -> bytes:
    body = struct.pack("<IIB23x", caps, 1 << 24, 45) + user + b"\0"
    body += lenenc_int(len(auth)) + auth
    if db is not None:
        body += db + b"\0"
    return body + plugin + b"\0"


def test_greeting_is_a_v10_handshake() -> None:
    data = greeting(7, NONCE, "5.7.99-fabric", NATIVE)
    body = data[4:]
    assert data[3] == 0 and body[0] == 10
    version, rest = body[1:].split(b"\0", 1)
    assert version == b"5.7.99-fabric"
    assert struct.unpack_from("<I", rest)[0] == 7
    assert rest[4:12] + rest[31:43] == NONCE
    assert rest.endswith(b"mysql_native_password\0")


def test_parse_response_reads_user_database_plugin() -> None:
    got = parse_response(_response(b"app", b"\x01" * 20))
    assert got == HandshakeResponse(got.capabilities, 1 << 24, 45, "app", b"\x01" * 20, "test",
                                    NATIVE)  # fmt: skip
    assert isinstance(parse_response(struct.pack("<IIB23x", 0x200 | 0x800, 0, 45)), SslRequest)
    for bad in (
        b"short",
        _response(b"app", b"x", caps=0x8000)[:40],  # no protocol 4.1
        _response(b"app", b"x" * 30)[:40],  # auth data past the end
        struct.pack("<IIB23x", 0x200 | 0x8000, 0, 45) + b"unterminated",
    ):
        with pytest.raises(MalformedPacket):
            parse_response(bad)


def test_scrambles_match_pymysqls_client_side() -> None:
    for password in ("s3cret", "p\u00e4ss", "x" * 80):
        native = _auth.scramble_native_password(password.encode(), NONCE)
        assert verify(NATIVE, password, NONCE, native)
        assert not verify(NATIVE, password + "!", NONCE, native)
        sha2 = _auth.scramble_caching_sha2(password.encode(), NONCE)
        assert verify(CACHING_SHA2, password, NONCE, sha2)
        assert not verify(NATIVE, password, NONCE, sha2)
        assert not verify(CACHING_SHA2, password, NONCE[::-1], sha2)
    assert verify(NATIVE, "", NONCE, b"") and not verify(NATIVE, "pw", NONCE, b"")
    assert not verify(NATIVE, "", NONCE, b"\x01" * 20)


# ----------------------------------------------------------------- statements


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SET AUTOCOMMIT = 0", SetAutocommit(False)),
        ("set autocommit=1;", SetAutocommit(True)),
        ("SET @@session.autocommit = OFF", SetAutocommit(False)),
        ("SET NAMES utf8mb4", SetNames("utf8mb4", None)),
        ("SET NAMES 'latin1' COLLATE 'latin1_bin'", SetNames("latin1", "latin1_bin")),
        ("USE `shop`", Use("shop")),
        ("COMMIT", EndTransaction(True)),
        ("rollback work", EndTransaction(False)),
        ("SELECT 1", Forward(dirty=False)),
        ("  /* note */ INSERT INTO t VALUES (1)", Forward(dirty=False)),
        ("SELECT @x := 1", Forward(dirty=True)),
        ("SELECT @@version", Forward(dirty=False)),
        ("SET sql_mode = ''", Forward(dirty=True)),
        ("SET autocommit = 0, @x = 1", Forward(dirty=True)),
        ("CREATE TEMPORARY TABLE t (a INT)", Forward(dirty=True)),
        ("SELECT 1; SET NAMES latin1", Forward(dirty=True)),
        ("PREPARE s FROM 'SELECT 1'", Forward(dirty=True)),
    ],
)
def test_classify(sql: str, expected: object) -> None:
    assert classify(sql.encode()) == expected
    assert SetNames("utf8mb4", None).is_default and not SetNames("latin1", None).is_default
