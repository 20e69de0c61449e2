"""LISTEN/NOTIFY delivery of the PostgreSQL front door: a client's LISTEN/UNLISTEN
changes registered with its database's `notify.DatabaseListener`, and the
notifications it passes on written to each listening client between the client's
messages (held while a reply to the client is being relayed), within
``max_notification_bytes`` unread per client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from .client import Client, DoorBase
from .notify import DatabaseListener

__all__ = ["NotificationDelivery"]


class NotificationDelivery(DoorBase):
    """Notifications from the database listeners to the listening clients."""

    async def _apply_listens(self, client: Client) -> None:
        changes, client.relay.listen_changes = client.relay.listen_changes, []
        listener = self.listeners.get(client.database)
        if listener is None:
            if all(verb == "unlisten" for verb, _ in changes):
                return
            listener = DatabaseListener(
                client.database, self.database_configs[client.database], self._deliver
            )
            self.listeners[client.database] = listener
        await listener.change(client.pid, changes)

    def _deliver(self, listeners: frozenset[Hashable], note: bytes) -> None:
        """A notification for every client in ``listeners``: queued for the client,
        written by its flusher while the client waits for its next message."""
        limit = self.config.max_notification_bytes
        for pid in listeners:
            client = self._clients.get(pid) if isinstance(pid, int) else None
            if client is None:
                continue
            client.held.append(note)
            client.held_bytes += len(note)
            if client.held_bytes > limit:
                self._overflow(client)
            elif not client.busy:
                self._flush_notifications(client)

    def _release_held(self, client: Client) -> None:
        """The client's reply is complete: its notifications may be written again."""
        client.busy = False
        self._flush_notifications(client)

    def _flush_notifications(self, client: Client) -> None:
        if client.held and not client.busy and client.flusher is None:
            client.flusher = asyncio.create_task(self._flush(client))

    async def _flush(self, client: Client) -> None:
        """Write the queued notifications, then wait for the client to take them;
        they count against its limit until it has. A reply to the client under way
        stops it (the relay loop starts it again after the reply)."""
        try:
            while client.held and not client.busy and client.pid in self._clients:
                notes = list(client.held)
                client.held.clear()
                size = sum(map(len, notes))
                self._write(client, b"".join(notes))
                self.notifications_delivered += len(notes)
                try:
                    await client.writer.drain()
                except (ConnectionError, OSError):
                    return
                client.held_bytes -= size
        finally:
            client.flusher = None

    def _overflow(self, client: Client) -> None:
        """The client does not read its notifications: it is disconnected."""
        self.notification_overflows += 1
        client.held.clear()
        client.held_bytes = 0
        if not client.busy:
            self._refuse(
                client.writer,
                "53400",
                "terminating connection: more than "
                f"{self.config.max_notification_bytes} bytes of notifications not read",
            )
        self._clients.pop(client.pid, None)
        if client.task is not None:
            client.task.cancel()
