"""LISTEN/NOTIFY bookkeeping, sans-IO: which clients listen on which channel, and
the LISTEN/UNLISTEN statements that keep one dedicated server connection per
database listening on exactly the union of those channels.

Also the wire pieces: parsing a client's ``LISTEN chan`` / ``UNLISTEN chan`` /
``UNLISTEN *`` statement, and reading and building NotificationResponse messages.
"""

from __future__ import annotations

from collections.abc import Hashable

from .wire import I32, message

__all__ = [
    "ALL",
    "ChannelRegistry",
    "notification",
    "parse_listen",
    "parse_notification",
    "quote_channel",
]

#: ``UNLISTEN *``
ALL = "*"
#: PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes
_NAME_MAX = 63


def _identifier(text: str) -> str | None:
    """A channel name as PostgreSQL reads it: quoted kept as is ("" unescaped),
    unquoted folded to lower case; None when it is not one identifier."""
    if text.startswith('"'):
        if len(text) < 3 or not text.endswith('"'):
            return None
        inner = text[1:-1]
        if '"' in inner.replace('""', ""):
            return None
        name = inner.replace('""', '"')
    else:
        if not text or not (text[0].isalpha() or text[0] == "_"):
            return None
        if not all(c.isalnum() or c in "_$" for c in text):
            return None
        name = text.lower()
    raw = name.encode()
    if len(raw) > _NAME_MAX:
        name = raw[:_NAME_MAX].decode(errors="ignore")
    return name


def parse_listen(sql: bytes) -> tuple[str, str] | None:
    """``("listen", chan)``, ``("unlisten", chan)`` or ``("unlisten", "*")`` for a
    query that is one LISTEN or UNLISTEN statement (an optional ``;`` at its end);
    None for anything else."""
    try:
        text = sql.rstrip(b"\0").decode().strip()
    except UnicodeDecodeError:
        return None
    text = text.rstrip(";").strip()
    parts = text.split(None, 1)
    if len(parts) != 2:
        return None
    verb = parts[0].upper()
    if verb not in ("LISTEN", "UNLISTEN"):
        return None
    arg = parts[1].strip()
    if verb == "UNLISTEN" and arg == "*":
        return ("unlisten", ALL)
    name = _identifier(arg)
    if name is None:
        return None
    return (verb.lower(), name)


def quote_channel(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parse_notification(body: bytes) -> tuple[int, str, bytes]:
    """A NotificationResponse body: (server pid, channel, payload bytes)."""
    (pid,) = I32.unpack_from(body, 0)
    chan_end = body.index(b"\0", 4)
    pay_end = body.index(b"\0", chan_end + 1)
    return pid, body[4:chan_end].decode(errors="replace"), body[chan_end + 1 : pay_end]


def notification(pid: int, channel: str, payload: bytes) -> bytes:
    """A NotificationResponse message as the client receives it."""
    return message(b"A", I32.pack(pid) + channel.encode() + b"\0" + payload + b"\0")


class ChannelRegistry:
    """Channel -> listening clients, for one database.

    Each change returns the statements the dedicated server connection must run
    so that it listens on the union of the clients' channels, no more, no less.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, set[Hashable]] = {}
        self._channels: dict[Hashable, set[str]] = {}

    def __repr__(self) -> str:
        return f"<ChannelRegistry channels={len(self._listeners)} clients={len(self._channels)}>"

    @property
    def empty(self) -> bool:
        return not self._listeners

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._listeners)

    def listeners(self, channel: str) -> frozenset[Hashable]:
        return frozenset(self._listeners.get(channel, ()))

    def channels_of(self, client: Hashable) -> frozenset[str]:
        return frozenset(self._channels.get(client, ()))

    def listener_count(self) -> int:
        """(client, channel) registrations."""
        return sum(len(s) for s in self._listeners.values())

    def listen(self, client: Hashable, channel: str) -> list[str]:
        self._channels.setdefault(client, set()).add(channel)
        listeners = self._listeners.setdefault(channel, set())
        first = not listeners
        listeners.add(client)
        return [f"LISTEN {quote_channel(channel)}"] if first else []

    def unlisten(self, client: Hashable, channel: str) -> list[str]:
        if channel == ALL:
            return self.drop(client)
        mine = self._channels.get(client)
        if mine is None or channel not in mine:
            return []
        mine.discard(channel)
        if not mine:
            del self._channels[client]
        return self._leave(client, channel)

    def drop(self, client: Hashable) -> list[str]:
        """The client left (or ran ``UNLISTEN *``)."""
        out: list[str] = []
        for channel in sorted(self._channels.pop(client, ())):
            out += self._leave(client, channel)
        return out

    def resync(self) -> list[str]:
        """What a new dedicated connection runs to listen on every channel."""
        return [f"LISTEN {quote_channel(c)}" for c in sorted(self._listeners)]

    def _leave(self, client: Hashable, channel: str) -> list[str]:
        listeners = self._listeners.get(channel)
        if listeners is None:
            return []
        listeners.discard(client)
        if listeners:
            return []
        del self._listeners[channel]
        return [f"UNLISTEN {quote_channel(channel)}"]
