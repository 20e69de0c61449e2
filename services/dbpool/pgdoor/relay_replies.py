"""The relay's state and its reply queue: one entry per client message the server
answers (`Entry`: which server message ends the reply, and whether it is forwarded,
swallowed or answered here), the errors the relay makes itself and what a failed
batch takes with it. `RelayState` is the base the relay's parts build on
(relay_statements.py, relay_listen.py, relay.py).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from pools import PgConnection

from .listen import parse_listen
from .wire import error_response

__all__ = [
    "LISTEN_KEYWORDS",
    "REFUSED_KEYWORDS",
    "SERVER_PREPARED_LIMIT",
    "Entry",
    "ProtocolViolation",
    "RelayState",
    "SessionState",
]

# entry kinds: which server message ends the reply to a client message
SYNC = 0  # Sync, Query, FunctionCall: ReadyForQuery
ONE = 1  # Parse, Bind, Close: ParseComplete / BindComplete / CloseComplete
DESCRIBE = 2  # Describe: [ParameterDescription] then RowDescription or NoData
EXECUTE = 3  # Execute: CommandComplete, EmptyQueryResponse or PortalSuspended
ENDS = {SYNC: b"Z", ONE: b"123", DESCRIBE: b"Tn", EXECUTE: b"CIs"}

# entry modes
FORWARD = 0
SWALLOW = 1  # an injected Parse: its ParseComplete is not the client's
SYNTH = 2  # answered here; ``payload`` goes to the client in its place

#: statements refused in transaction mode (first keyword of a simple query)
REFUSED_KEYWORDS = (b"PREPARE",)

#: statements answered by the front door itself (first keyword of a simple query)
LISTEN_KEYWORDS = (b"LISTEN", b"UNLISTEN")

SPECIAL_KEYWORDS = REFUSED_KEYWORDS + LISTEN_KEYWORDS

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


class Entry:
    """What a client message sent to the server (or answered here) waits for."""

    __slots__ = ("action", "client_name", "kind", "mode", "payload", "server_name")

    def __init__(
        self,
        kind: int,
        mode: int = FORWARD,
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
        return self.mode != FORWARD or bool(self.server_name)


PLAIN = {k: Entry(k) for k in ENDS}  # shared: plain entries carry no state

ENDS_ORD = {k: frozenset(v) for k, v in ENDS.items()}


class RelayState:
    """The state of one client's relay and its reply queue; the relay's parts
    (`relay.Relay` and its bases) add what they do with it."""

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
        self._entries: deque[Entry] = deque()
        self._special = 0  # entries that are not plain forwards
        self._syncs = 0  # SYNC entries pending
        self._batch_open = False  # extended-protocol messages sent since the last Sync
        self._skip = False  # the server ignores messages until the next Sync
        self._copy_ended_ahead = 0  # CopyDone/CopyFail sent before their CopyInResponse
        self._stail = b""  # incomplete server message
        self._spass = 0  # bytes of a large DataRow/CopyData still to pass through
        self.to_client = bytearray()  # replies made here that are due now

    def _synth_error(self, sqlstate: str, text: str, *, cycle_end: bool = False) -> None:
        """An ErrorResponse made here; the rest of the batch is skipped, as the
        server would. A refused simple query also gets its ReadyForQuery."""
        payload = error_response(sqlstate, text)
        if cycle_end:
            self._push(Entry(SYNC, SYNTH, payload))
        else:
            self._skip = True
            self._push(Entry(ONE, SYNTH, payload))

    def _push(self, entry: Entry) -> None:
        self._entries.append(entry)
        if entry.kind == SYNC:
            self._syncs += 1
        if entry.mode != FORWARD or entry.server_name:
            self._special += 1

    def _pop(self) -> Entry:
        entry = self._entries.popleft()
        if entry.kind == SYNC:
            self._syncs -= 1
        if entry.mode != FORWARD or entry.server_name:
            self._special -= 1
        return entry

    def _fail_batch(self) -> None:
        """An error ended the batch: what the server skips until Sync has no reply."""
        entries = self._entries
        while entries and entries[0].kind != SYNC:
            entry = self._pop()
            self._forget(entry)
        if not self._syncs:
            self._skip = True

    def _forget(self, entry: Entry) -> None:
        """A Parse that failed or was skipped: its statement does not exist."""
        if entry.client_name and self.statements.get(entry.client_name, (b"",))[0] == (
            entry.server_name
        ):
            del self.statements[entry.client_name]
        if entry.server_name and entry.mode != SYNTH and self.session is not None:
            self.session.prepared.discard(entry.server_name)


def listen_action(buf: bytes, start: int, end: int) -> tuple[str, str] | None:
    """The LISTEN/UNLISTEN of a Parse's query text (``buf[start:end]`` begins with it)."""
    if first_keyword(buf, start) not in LISTEN_KEYWORDS:
        return None
    return parse_listen(buf[start : buf.index(b"\0", start, end)])


def first_keyword(buf: bytes, start: int) -> bytes | None:
    """The first keyword of a query when it is one the relay refuses or answers."""
    head = buf[start : start + 24].lstrip().upper()
    if not head.startswith(SPECIAL_KEYWORDS):
        return None
    word = head.split(None, 1)[0].rstrip(b";\0")
    return word if word in SPECIAL_KEYWORDS else None
