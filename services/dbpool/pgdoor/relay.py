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

Its parts: relay_replies.py (the relay's state, its reply queue and the errors it
makes), relay_statements.py (the prepared-statement remapping), relay_listen.py
(LISTEN/UNLISTEN answered here); this module frames and routes the client's
messages and walks the server's replies.
"""

from __future__ import annotations

from .relay_listen import ListenAnswers
from .relay_replies import (
    DESCRIBE,
    ENDS_ORD,
    EXECUTE,
    LISTEN_KEYWORDS,
    ONE,
    PLAIN,
    REFUSED_KEYWORDS,
    SERVER_PREPARED_LIMIT,
    SWALLOW,
    SYNC,
    SYNTH,
    Entry,
    ProtocolViolation,
    SessionState,
    first_keyword,
)
from .relay_statements import StatementMap
from .wire import CLOSE_COMPLETE, I32, message

__all__ = [
    "LISTEN_KEYWORDS",
    "REFUSED_KEYWORDS",
    "SERVER_PREPARED_LIMIT",
    "ProtocolViolation",
    "Relay",
    "SessionState",
]

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


class Relay(StatementMap, ListenAnswers):
    """One client's side of transaction pooling (see the module docstring)."""

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
            kind == 0x51 and first_keyword(self._mbuf, start) in LISTEN_KEYWORDS
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
            if first_keyword(buf, start) is None:
                self._push(PLAIN[SYNC])
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
            keyword = first_keyword(buf, start)
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
            self._push(PLAIN[SYNC])
            out.append(raw)
        elif kind == 0x53:  # Sync
            self._skip = False
            self._batch_open = False
            self._push(PLAIN[SYNC])
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
                self._push(PLAIN[ONE])
                out.append(raw)
                return
            server = self._server_name(name, out)
            if server is None:
                return
            body = buf[start : portal_end + 1] + server + buf[name_end:end]
            self._push(PLAIN[ONE])
            out.append(message(b"B", body))
        elif kind == 0x44:  # Describe
            self._batch_open = True
            what = buf[start : start + 1]
            name = buf[start + 1 : end - 1]
            if what != b"S" or not name:
                self._push(PLAIN[DESCRIBE])
                out.append(raw)
                return
            server = self._server_name(name, out)
            if server is None:
                return
            self._push(PLAIN[DESCRIBE])
            out.append(message(b"D", b"S" + server + b"\0"))
        elif kind == 0x45:  # Execute
            self._batch_open = True
            action = self._portals.get(buf[start : buf.index(b"\0", start, end)])
            if action is not None:  # a LISTEN/UNLISTEN portal: answered here
                entry = Entry(EXECUTE, SYNTH)
                entry.action = action
                self._push(entry)
                return
            self._push(PLAIN[EXECUTE])
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
                self._push(Entry(ONE, SYNTH, CLOSE_COMPLETE))
                return
            self._push(PLAIN[ONE])
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
            self._push(PLAIN[SYNC])
            out.append(raw)
        elif kind == 0x58:  # Terminate: the session stays with the pool
            self.terminated = True
        else:
            raise ProtocolViolation("08P01", f"invalid frontend message type {kind}")

    def _emit_due(self) -> None:
        """Replies made here that reached the head of the queue go out now."""
        entries = self._entries
        while entries and entries[0].mode == SYNTH:
            entry = self._pop()
            payload = entry.payload
            if entry.action is not None:
                payload = self._listen_reply(entry.action)
            self.to_client += payload
            if entry.kind == SYNC:
                self.to_client += message(b"Z", self.status)
            elif payload[:1] == b"E":
                self._fail_batch()

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
        fast = self._special == 0 and (not entries or entries[-1].kind == SYNC)
        out: list[bytes] | None = None if fast else []
        run = 0  # start of the bytes not yet copied to ``out``
        while n - pos >= 5:
            kind = data[pos]
            end = pos + 1 + I32.unpack_from(data, pos + 1)[0]
            if end > n:
                head = self._entries[0] if self._entries else None
                if kind in (0x44, 0x64) and (head is None or head.mode != SWALLOW):
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
                if kind == 0x45 and head.kind != SYNC:  # ErrorResponse ends the batch
                    self._pop()
                    self._forget(head)
                    self._fail_batch()
                elif kind == 0x5A:
                    self._ready(data[pos + 5 : pos + 6])
                elif kind in ENDS_ORD[head.kind]:
                    self._pop()
                    drop = head.mode == SWALLOW
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
            if self._entries and self._entries[0].mode == SYNTH:
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
            if entry.kind == SYNC:
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
