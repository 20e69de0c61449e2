"""The transaction relay of one client, sans-IO: client messages in, bytes for the
server out; server bytes in, bytes for the client out.

Bytes are forwarded as they came, except where transaction pooling needs a change:

* a client's named prepared statement is renamed to a server-side name derived
  from its text (``F`` + a hash of the Parse body), prepared on whichever session
  the client lands on, and prepared again (a Parse injected before its Bind or
  Describe, whose ParseComplete is swallowed) on a session that lacks it; a Parse
  of a statement the session already has, and a Close of a named statement, are
  answered here (ParseComplete, CloseComplete) in their place in the reply stream;
* statements transaction mode cannot serve are refused with an ErrorResponse;
* a simple query that is one LISTEN or UNLISTEN statement is answered here
  (CommandComplete and ReadyForQuery in its place) and queued in
  `listen_changes` for the front door's channel registry (listen.py); inside a
  transaction it waits for the COMMIT (a ROLLBACK forgets it), as PostgreSQL does.

To put synthesized replies in their place, the relay keeps one entry per message
sent that the server answers, and walks the server's replies message by message;
while every pending entry is a plain forward it only looks for ReadyForQuery,
ParameterStatus, CopyIn and command tags (the fast path).

The relay also tells when the server session may go back to the pool
(`releasable`: every reply received, no extended-protocol batch open, status I)
and marks the session dirty when the client changed session state (a SET, LISTEN,
a temporary table...: a command tag or a ParameterStatus says so), so the pool
resets it before lending it again.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Protocol

from pools import PgConnection

from .listen import ALL, parse_listen
from .wire import CLOSE_COMPLETE, I32, PARSE_COMPLETE, error_response, message

__all__ = ["ProtocolViolation", "Relay", "SessionState"]

# entry kinds: which server message ends the reply to a client message
_SYNC = 0  # Sync, Query, FunctionCall: ReadyForQuery
_ONE = 1  # Parse, Bind, Close: ParseComplete / BindComplete / CloseComplete
_DESCRIBE = 2  # Describe: [ParameterDescription] then RowDescription or NoData
_EXECUTE = 3  # Execute: CommandComplete, EmptyQueryResponse or PortalSuspended
_ENDS = {_SYNC: b"Z", _ONE: b"123", _DESCRIBE: b"Tn", _EXECUTE: b"CIs"}

# entry modes
_FORWARD = 0
_SWALLOW = 1  # an injected Parse: its ParseComplete is not the client's
_SYNTH = 2  # answered here; ``payload`` goes to the client in its place

# Command tags after which the session must be reset before someone else gets it.
_DIRTY_TAGS = (
    b"SET",
    b"RES",
    b"DIS",
    b"DEA",
    b"LIS",
    b"UNL",
    b"DEC",
    b"CRE",
    b"LOA",
)
_DIRTY_TAG_PREFIXES = (
    b"SET\0",
    b"RESET",
    b"DISCARD",
    b"DEALLOCATE",
    b"LISTEN",
    b"UNLISTEN",
    b"DECLARE",
    b"CREATE TABLE",
    b"LOAD",
)
_FORGET_ALL_TAGS = (b"DISCARD ALL", b"DEALLOCATE ALL")
#: statements refused in transaction mode (first keyword of a simple query)
REFUSED_KEYWORDS = (b"PREPARE",)
#: statements answered by the front door itself (first keyword of a simple query)
LISTEN_KEYWORDS = (b"LISTEN", b"UNLISTEN")
_SPECIAL_KEYWORDS = REFUSED_KEYWORDS + LISTEN_KEYWORDS
#: server-side statements one session keeps before the pool deallocates them all
SERVER_PREPARED_LIMIT = PgConnection.PREPARED_LIMIT


class ProtocolViolation(Exception):
    """The client broke the protocol (or a limit): answered with a FATAL error."""

    def __init__(self, sqlstate: str, text: str) -> None:
        super().__init__(text)
        self.sqlstate = sqlstate
        self.text = text


class SessionState(Protocol):
    """What the relay reads and keeps true of the server session it is attached to
    (`pools.PgConnection` has these attributes)."""

    prepared: set[bytes]
    dirty: bool
    #: transaction status of the session's last ReadyForQuery (I, T or E)
    status: bytes


class _Entry:
    __slots__ = ("action", "client_name", "kind", "mode", "payload", "server_name")

    def __init__(
        self,
        kind: int,
        mode: int = _FORWARD,
        payload: bytes = b"",
        client_name: bytes = b"",
        server_name: bytes = b"",
    ) -> None:
        self.kind = kind
        self.mode = mode
        self.payload = payload
        self.client_name = client_name
        self.server_name = server_name
        #: a LISTEN/UNLISTEN answered here: ("listen" | "unlisten", channel)
        self.action: tuple[str, str] | None = None

    @property
    def special(self) -> bool:
        return self.mode != _FORWARD or bool(self.server_name)


_PLAIN = {k: _Entry(k) for k in _ENDS}  # shared: plain entries carry no state


class Relay:
    """One client's side of transaction pooling (see the module docstring)."""

    def __init__(
        self, *, max_message_size: int, max_statements: int = 1000, max_channels: int = 100
    ) -> None:
        self.max_message_size = max_message_size
        self.max_statements = max_statements
        self.max_channels = max_channels
        #: channels the client listens on (changes applied or due to be applied)
        self.channels: set[str] = set()
        #: LISTEN/UNLISTEN changes for the front door to apply, oldest first
        self.listen_changes: list[tuple[str, str]] = []
        #: changes made inside the open transaction: applied at COMMIT
        self._listen_pending: list[tuple[str, str]] = []
        self._channels_pending: set[str] = set()
        #: portals (and the unnamed statement) that run LISTEN/UNLISTEN: their
        #: Parse, Bind and Describe go to the server, their Execute is answered here
        self._portals: dict[bytes, tuple[str, str]] = {}
        self._unnamed_action: tuple[str, str] | None = None
        #: the client's named statements: name -> (server name, Parse body after the name)
        self.statements: dict[bytes, tuple[bytes, bytes]] = {}
        #: transaction status of the last ReadyForQuery relayed
        self.status = b"I"
        self.copy_in = False
        self.terminated = False
        self.session: SessionState | None = None
        #: client bytes received since the first incomplete message
        self._cbuf = b""
        self._msgs: list[tuple[int, int, int]] = []  # (kind, body start, end) in _mbuf
        self._mbuf = b""
        self._entries: deque[_Entry] = deque()
        self._special = 0  # entries that are not plain forwards
        self._syncs = 0  # _SYNC entries pending
        self._batch_open = False  # extended-protocol messages sent since the last Sync
        self._skip = False  # the server ignores messages until the next Sync
        self._copy_ended_ahead = 0  # CopyDone/CopyFail sent before their CopyInResponse
        self._stail = b""  # incomplete server message
        self._spass = 0  # bytes of a large DataRow/CopyData still to pass through
        self.to_client = bytearray()  # replies made here that are due now

    def __repr__(self) -> str:
        return (
            f"<Relay status={self.status.decode()} pending={len(self._entries)} "
            f"statements={len(self.statements)}{' copy' if self.copy_in else ''}>"
        )

    # ------------------------------------------------------------------ state

    @property
    def awaiting_server(self) -> bool:
        """Replies are due from the server (and the client is not sending COPY data)."""
        return bool(self._entries) and not self.copy_in

    @property
    def releasable(self) -> bool:
        """The server session may go back to the pool."""
        return (
            not self._entries
            and not self._batch_open
            and not self._skip
            and self.status == b"I"
            and not self.copy_in
            and not self._spass
            and not self._stail
        )

    @property
    def idle(self) -> bool:
        """Nothing pending from the client and no replies due."""
        return not self._entries and not self._msgs and not self._batch_open

    @property
    def local_only(self) -> bool:
        """The framed client messages are simple queries answered here (LISTEN,
        UNLISTEN): no server session is needed for them."""
        return bool(self._msgs) and all(
            kind == 0x51 and _keyword(self._mbuf, start) in LISTEN_KEYWORDS
            for kind, start, _ in self._msgs
        ) and not self._entries and not self._batch_open and self.status == b"I"

    @property
    def only_terminate(self) -> bool:
        """The framed client messages are just a Terminate."""
        return len(self._msgs) == 1 and self._msgs[0][0] == 0x58

    # ------------------------------------------------------------ client side

    def feed_client(self, data: bytes) -> bool:
        """Frame client bytes; True when complete messages wait for `route`."""
        buf = self._cbuf + data if self._cbuf else data
        n = len(buf)
        pos = 0
        msgs = self._msgs
        limit = self.max_message_size
        while n - pos >= 5:
            size = I32.unpack_from(buf, pos + 1)[0]
            if size < 4:
                raise ProtocolViolation("08P01", f"invalid message length {size}")
            if size - 4 > limit:
                raise ProtocolViolation(
                    "54000", f"message of {size - 4} bytes is larger than the limit of {limit}"
                )
            end = pos + 1 + size
            if end > n:
                break
            msgs.append((buf[pos], pos + 5, end))
            pos = end
        self._cbuf = buf[pos:] if pos < n else b""
        self._mbuf = buf
        return bool(msgs)

    def route(self, session: SessionState | None) -> bytes:
        """The bytes to send to ``session`` for the framed client messages; replies
        made here that are due at once are appended to `to_client`."""
        self.session = session
        buf, msgs = self._mbuf, self._msgs
        self._msgs = []
        # Fast path: one simple query (pgbench -S, psql).
        if len(msgs) == 1 and msgs[0][0] == 0x51 and not self._cbuf and not self._batch_open:
            kind, start, end = msgs[0]
            if _keyword(buf, start) is None:
                self._push(_PLAIN[_SYNC])
                return buf if start == 5 and end == len(buf) else buf[start - 5 : end]
        out: list[bytes] = []
        for kind, start, end in msgs:
            if self.terminated:
                break
            if self._skip and kind not in (0x53, 0x51):  # Sync, Query
                continue
            try:
                self._one(kind, buf, start, end, out)
            except ValueError:  # a name without its terminating NUL
                raise ProtocolViolation("08P01", f"malformed message of type {kind}") from None
        self._emit_due()
        return b"".join(out)

    def _one(self, kind: int, buf: bytes, start: int, end: int, out: list[bytes]) -> None:
        raw = buf[start - 5 : end]
        if kind == 0x51:  # Query (it also ends an extended-protocol batch)
            self._batch_open = False
            keyword = _keyword(buf, start)
            if keyword in LISTEN_KEYWORDS:
                self._listen_query(buf[start:end], keyword)
                return
            if keyword is not None:
                word = keyword.decode()
                self._synth_error(
                    "0A000",
                    f"{word} is not supported in transaction pooling mode",
                    cycle_end=True,
                )
                return
            self._push(_PLAIN[_SYNC])
            out.append(raw)
        elif kind == 0x53:  # Sync
            self._skip = False
            self._batch_open = False
            self._push(_PLAIN[_SYNC])
            out.append(raw)
        elif kind == 0x50:  # Parse
            self._batch_open = True
            self._parse(buf, start, end, raw, out)
        elif kind == 0x42:  # Bind
            self._batch_open = True
            portal_end = buf.index(b"\0", start, end)
            name_end = buf.index(b"\0", portal_end + 1, end)
            name = buf[portal_end + 1 : name_end]
            self._bind_portal(buf[start:portal_end], name)
            if not name:
                self._push(_PLAIN[_ONE])
                out.append(raw)
                return
            server = self._server_name(name, out)
            if server is None:
                return
            body = buf[start : portal_end + 1] + server + buf[name_end:end]
            self._push(_PLAIN[_ONE])
            out.append(message(b"B", body))
        elif kind == 0x44:  # Describe
            self._batch_open = True
            what = buf[start : start + 1]
            name = buf[start + 1 : end - 1]
            if what != b"S" or not name:
                self._push(_PLAIN[_DESCRIBE])
                out.append(raw)
                return
            server = self._server_name(name, out)
            if server is None:
                return
            self._push(_PLAIN[_DESCRIBE])
            out.append(message(b"D", b"S" + server + b"\0"))
        elif kind == 0x45:  # Execute
            self._batch_open = True
            action = self._portals.get(buf[start : buf.index(b"\0", start, end)])
            if action is not None:  # a LISTEN/UNLISTEN portal: answered here
                entry = _Entry(_EXECUTE, _SYNTH)
                entry.action = action
                self._push(entry)
                return
            self._push(_PLAIN[_EXECUTE])
            out.append(raw)
        elif kind == 0x43:  # Close
            self._batch_open = True
            what = buf[start : start + 1]
            name = buf[start + 1 : end - 1]
            if what == b"P":
                self._portals.pop(name, None)
            if what == b"S" and name:
                # the server-side statement stays on its session, for whoever needs it
                self.statements.pop(name, None)
                self._push(_Entry(_ONE, _SYNTH, CLOSE_COMPLETE))
                return
            self._push(_PLAIN[_ONE])
            out.append(raw)
        elif kind == 0x48:  # Flush
            out.append(raw)
        elif kind in (0x64, 0x63, 0x66):  # CopyData, CopyDone, CopyFail
            if kind != 0x64:
                if self.copy_in:
                    self.copy_in = False
                else:  # sent before the server's CopyInResponse arrived
                    self._copy_ended_ahead += 1
            out.append(raw)
        elif kind == 0x46:  # FunctionCall
            self._push(_PLAIN[_SYNC])
            out.append(raw)
        elif kind == 0x58:  # Terminate: the session stays with the pool
            self.terminated = True
        else:
            raise ProtocolViolation("08P01", f"invalid frontend message type {kind}")

    def _listen_query(self, sql: bytes, keyword: bytes) -> None:
        action = parse_listen(sql)
        if action is None:
            self._synth_error(
                "0A000",
                f"{keyword.decode()} must be the only statement of its query, "
                "with one channel name, in transaction pooling mode",
                cycle_end=True,
            )
            return
        entry = _Entry(_SYNC, _SYNTH)
        entry.action = action
        self._push(entry)

    def _bind_portal(self, portal: bytes, statement: bytes) -> None:
        if statement:
            known = self.statements.get(statement)
            action = None
            if known is not None:
                rest = known[1]
                action = _listen_action(rest, 0, len(rest))
        else:
            action = self._unnamed_action
        if action is None:
            self._portals.pop(portal, None)
        else:
            self._portals[portal] = action

    def _listen_reply(self, action: tuple[str, str]) -> bytes:
        """The reply to a LISTEN/UNLISTEN answered here, given the transaction
        status its turn came in; the change is queued (or held until COMMIT)."""
        verb, channel = action
        if self.status == b"E":
            return error_response(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            )
        if verb == "listen" and channel not in self.channels | self._channels_pending:
            if len(self.channels | self._channels_pending) >= self.max_channels:
                return error_response(
                    "54000", f"more than {self.max_channels} channels listened on by one client"
                )
        if self.status == b"T":
            self._listen_pending.append(action)
            if verb == "listen":
                self._channels_pending.add(channel)
        else:
            self._apply_listen(action)
        return message(b"C", verb.upper().encode() + b"\0")

    def _apply_listen(self, action: tuple[str, str]) -> None:
        verb, channel = action
        if verb == "listen":
            self.channels.add(channel)
        elif channel == ALL:
            self.channels.clear()
        else:
            self.channels.discard(channel)
        self.listen_changes.append(action)

    def _end_transaction(self, committed: bool) -> None:
        pending, self._listen_pending = self._listen_pending, []
        self._channels_pending.clear()
        if committed:
            for action in pending:
                self._apply_listen(action)

    def _parse(self, buf: bytes, start: int, end: int, raw: bytes, out: list[bytes]) -> None:
        name_end = buf.index(b"\0", start, end)
        name = buf[start:name_end]
        if not name:
            self._unnamed_action = _listen_action(buf, name_end + 1, end)
            self._push(_PLAIN[_ONE])
            out.append(raw)
            return
        if name in self.statements:
            shown = name.decode(errors="replace")
            self._synth_error("42P05", f'prepared statement "{shown}" already exists')
            return
        if len(self.statements) >= self.max_statements:
            self._synth_error(
                "54000",
                f"more than {self.max_statements} prepared statements on one client",
            )
            return
        rest = buf[name_end + 1 : end]
        server = b"F" + hashlib.blake2b(rest, digest_size=12).hexdigest().encode()
        self.statements[name] = (server, rest)
        session = self.session
        assert session is not None
        if server in session.prepared:
            self._push(_Entry(_ONE, _SYNTH, PARSE_COMPLETE, name, server))
            return
        self._prepare(session, server)
        self._push(_Entry(_ONE, _FORWARD, b"", name, server))
        out.append(message(b"P", server + b"\0" + rest))

    def _server_name(self, name: bytes, out: list[bytes]) -> bytes | None:
        """The server-side name of the client's statement ``name``, prepared on the
        session first when it lacks it (None: refused, error queued)."""
        known = self.statements.get(name)
        if known is None:
            shown = name.decode(errors="replace")
            self._synth_error("26000", f'prepared statement "{shown}" does not exist')
            return None
        server, rest = known
        session = self.session
        assert session is not None
        if server not in session.prepared:
            self._prepare(session, server)
            self._push(_Entry(_ONE, _SWALLOW, b"", b"", server))
            out.append(message(b"P", server + b"\0" + rest))
        return server

    def _prepare(self, session: SessionState, server: bytes) -> None:
        session.prepared.add(server)
        if len(session.prepared) > SERVER_PREPARED_LIMIT:
            session.dirty = True  # the pool deallocates them all before the next lease

    def _synth_error(self, sqlstate: str, text: str, *, cycle_end: bool = False) -> None:
        """An ErrorResponse made here; the rest of the batch is skipped, as the
        server would. A refused simple query also gets its ReadyForQuery."""
        payload = error_response(sqlstate, text)
        if cycle_end:
            self._push(_Entry(_SYNC, _SYNTH, payload))
        else:
            self._skip = True
            self._push(_Entry(_ONE, _SYNTH, payload))

    def _push(self, entry: _Entry) -> None:
        self._entries.append(entry)
        if entry.kind == _SYNC:
            self._syncs += 1
        if entry.mode != _FORWARD or entry.server_name:
            self._special += 1

    def _pop(self) -> _Entry:
        entry = self._entries.popleft()
        if entry.kind == _SYNC:
            self._syncs -= 1
        if entry.mode != _FORWARD or entry.server_name:
            self._special -= 1
        return entry

    def _emit_due(self) -> None:
        """Replies made here that reached the head of the queue go out now."""
        entries = self._entries
        while entries and entries[0].mode == _SYNTH:
            entry = self._pop()
            payload = entry.payload
            if entry.action is not None:
                payload = self._listen_reply(entry.action)
            self.to_client += payload
            if entry.kind == _SYNC:
                self.to_client += message(b"Z", self.status)
            elif payload[:1] == b"E":
                self._fail_batch()

    def _fail_batch(self) -> None:
        """An error ended the batch: what the server skips until Sync has no reply."""
        entries = self._entries
        while entries and entries[0].kind != _SYNC:
            entry = self._pop()
            self._forget(entry)
        if not self._syncs:
            self._skip = True

    def _forget(self, entry: _Entry) -> None:
        """A Parse that failed or was skipped: its statement does not exist."""
        if entry.client_name and self.statements.get(entry.client_name, (b"",))[0] == (
            entry.server_name
        ):
            del self.statements[entry.client_name]
        if entry.server_name and entry.mode != _SYNTH and self.session is not None:
            self.session.prepared.discard(entry.server_name)

    # ------------------------------------------------------------ server side

    def feed_server(self, data: bytes) -> bytes:
        """Server bytes in, bytes for the client out (synthesized replies included)."""
        if self._stail:
            data = self._stail + data
            self._stail = b""
        n = len(data)
        pos = 0
        if self._spass:
            pos = min(self._spass, n)
            self._spass -= pos
        # Fast path when only plain forwards are pending and the last is answered by
        # a ReadyForQuery: finding ReadyForQuery messages then accounts for them all.
        entries = self._entries
        fast = self._special == 0 and (not entries or entries[-1].kind == _SYNC)
        out: list[bytes] | None = None if fast else []
        run = 0  # start of the bytes not yet copied to ``out``
        while n - pos >= 5:
            kind = data[pos]
            end = pos + 1 + I32.unpack_from(data, pos + 1)[0]
            if end > n:
                head = self._entries[0] if self._entries else None
                if kind in (0x44, 0x64) and (head is None or head.mode != _SWALLOW):
                    self._spass = end - n  # a large DataRow / CopyData: pass it on as it comes
                    pos = n
                break
            if out is None:
                # fast path: every pending entry is a plain forward
                if kind == 0x5A:  # ReadyForQuery
                    self._ready(data[pos + 5 : pos + 6])
                elif kind == 0x43 or kind == 0x53:
                    self._note(kind, data, pos + 5, end)
                elif kind == 0x47 or kind == 0x57:  # CopyIn / CopyBoth
                    self._copy_started()
                elif kind == 0x45 and not self._syncs and self._entries:
                    self._skip = True
                pos = end
                continue
            # slow path: match the reply to its entry
            drop = False
            if kind in (0x4E, 0x41):  # Notice, Notification: not replies
                pass
            elif kind == 0x53:  # ParameterStatus
                self._note(kind, data, pos + 5, end)
            elif not self._entries:
                pass  # nothing pending (an async error before a disconnect)
            else:
                head = self._entries[0]
                if kind == 0x45 and head.kind != _SYNC:  # ErrorResponse ends the batch
                    self._pop()
                    self._forget(head)
                    self._fail_batch()
                elif kind == 0x5A:
                    self._ready(data[pos + 5 : pos + 6])
                elif kind in _ENDS_ORD[head.kind]:
                    self._pop()
                    drop = head.mode == _SWALLOW
                    if kind == 0x43:
                        self._note(kind, data, pos + 5, end)
                elif kind == 0x47 or kind == 0x57:
                    self._copy_started()
                elif kind == 0x43:
                    self._note(kind, data, pos + 5, end)
            if drop:
                out.append(data[run:pos])
                run = end
            pos = end
            if self._entries and self._entries[0].mode == _SYNTH:
                out.append(data[run:pos])
                run = pos
                self._emit_due()
                out.append(bytes(self.to_client))
                self.to_client.clear()
        if pos < n:
            self._stail = data[pos:]
        if out is None:
            return data if pos == n else data[:pos]
        out.append(data[run:pos])
        return b"".join(out)

    def _copy_started(self) -> None:
        """CopyInResponse: the client sends data now, unless it already ended it."""
        if self._copy_ended_ahead:
            self._copy_ended_ahead -= 1
        else:
            self.copy_in = True

    def _ready(self, status: bytes) -> None:
        self.status = status
        if status == b"I":
            self._portals.clear()  # portals end with their transaction
            if self._listen_pending:
                self._end_transaction(False)  # ended without a COMMIT tag
        if self.session is not None:
            self.session.status = status
        self._skip = False
        entries = self._entries
        while entries:
            entry = self._pop()
            if entry.kind == _SYNC:
                break
            self._forget(entry)

    def _note(self, kind: int, data: bytes, start: int, end: int) -> None:
        if self._listen_pending and kind == 0x43:
            if data[start:end].startswith(b"COMMIT\0"):
                self._end_transaction(True)
            elif data[start:end].startswith(b"ROLLBACK\0"):
                self._end_transaction(False)
        session = self.session
        if session is None:
            return
        if kind == 0x53:  # ParameterStatus: a reported setting changed
            session.dirty = True
            return
        if data[start : start + 3] not in _DIRTY_TAGS:
            return
        tag = data[start:end]
        if tag.startswith(_DIRTY_TAG_PREFIXES):
            session.dirty = True
            if tag.startswith(_FORGET_ALL_TAGS):
                session.prepared.clear()
                self.statements.clear()


_ENDS_ORD = {k: frozenset(v) for k, v in _ENDS.items()}


def _listen_action(buf: bytes, start: int, end: int) -> tuple[str, str] | None:
    """The LISTEN/UNLISTEN of a Parse's query text (``buf[start:end]`` begins with it)."""
    if _keyword(buf, start) not in LISTEN_KEYWORDS:
        return None
    return parse_listen(buf[start : buf.index(b"\0", start, end)])


def _keyword(buf: bytes, start: int) -> bytes | None:
    """The first keyword of a query when it is one the relay refuses or answers."""
    head = buf[start : start + 24].lstrip().upper()
    if not head.startswith(_SPECIAL_KEYWORDS):
        return None
    word = head.split(None, 1)[0].rstrip(b";\0")
    return word if word in _SPECIAL_KEYWORDS else None
