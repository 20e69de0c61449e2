"""The relay's LISTEN/UNLISTEN answers: a simple query that is one LISTEN or
UNLISTEN statement (or a portal that runs one) is answered here and queued in
`listen_changes` for the front door's channel registry (listen.py); inside a
transaction it waits for the COMMIT (a ROLLBACK forgets it), as PostgreSQL does.
"""

from __future__ import annotations

from .listen import ALL, parse_listen
from .relay_replies import SYNC, SYNTH, Entry, RelayState, listen_action
from .wire import error_response, message

__all__ = ["ListenAnswers"]


class ListenAnswers(RelayState):
    """LISTEN/UNLISTEN answered by the relay, applied at once or at COMMIT."""

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
        entry = Entry(SYNC, SYNTH)
        entry.action = action
        self._push(entry)

    def _bind_portal(self, portal: bytes, statement: bytes) -> None:
        if statement:
            known = self.statements.get(statement)
            action = None
            if known is not None:
                rest = known[1]
                action = listen_action(rest, 0, len(rest))
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
