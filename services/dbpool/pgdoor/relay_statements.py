"""The relay's prepared-statement remapping: a client's named statement gets a
server-side name derived from its text (``F`` + a hash of the Parse body), is
prepared on whichever session the client lands on, and prepared again (a Parse
injected before its Bind or Describe, whose ParseComplete is swallowed) on a
session that lacks it; a Parse of a statement the session already has is answered
here.
"""

from __future__ import annotations

import hashlib

from .relay_replies import (
    FORWARD,
    ONE,
    PLAIN,
    SERVER_PREPARED_LIMIT,
    SWALLOW,
    SYNTH,
    Entry,
    RelayState,
    SessionState,
    listen_action,
)
from .wire import PARSE_COMPLETE, message

__all__ = ["StatementMap"]


class StatementMap(RelayState):
    """Client statement names to server statement names, per session."""

    def _parse(self, buf: bytes, start: int, end: int, raw: bytes, out: list[bytes]) -> None:
        name_end = buf.index(b"\0", start, end)
        name = buf[start:name_end]
        if not name:
            self._unnamed_action = listen_action(buf, name_end + 1, end)
            self._push(PLAIN[ONE])
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
            self._push(Entry(ONE, SYNTH, PARSE_COMPLETE, name, server))
            return
        self._prepare(session, server)
        self._push(Entry(ONE, FORWARD, b"", name, server))
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
            self._push(Entry(ONE, SWALLOW, b"", b"", server))
            out.append(message(b"P", server + b"\0" + rest))
        return server

    def _prepare(self, session: SessionState, server: bytes) -> None:
        session.prepared.add(server)
        if len(session.prepared) > SERVER_PREPARED_LIMIT:
            session.dirty = True  # the pool deallocates them all before the next lease
