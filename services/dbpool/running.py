"""Statements run by a dbpool session: outside a transaction each ``query`` or
``execute_many`` borrows a lease, runs and gives it back (the response may go
before the lease is back, with ``reply_before_release``); a query's rows are
streamed from the driver and encoded chunk by chunk within the result limits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pools import DatabaseError, Lease, Pool, PoolError, ResultTooLarge

from .protocol import Done, ExecuteMany, Query, Response
from .results import FIRST_CHUNK_ROWS, Reply, RowsBuilder, UnencodableResult
from .session_io import REQUEST_KINDS, SessionIO, error_reply

__all__ = ["StatementRunner"]

log = logging.getLogger("services.dbpool")


class StatementRunner(SessionIO):
    """A session's statements, on a lease of their own or a transaction's."""

    async def _execute(self, lease: Lease, req: Query | ExecuteMany) -> Response | Reply:
        if isinstance(req, Query):
            return await self._query(lease, req)
        count = await lease.execute_many(req.sql, req.params_seq)
        return Done(req.id, count)

    async def _query(self, lease: Lease, req: Query) -> Reply:
        """Stream the result from the driver, encoding each chunk as it arrives;
        `ResultTooLarge` stops the statement as soon as a limit is crossed."""
        lim = self._limits
        builder = RowsBuilder(req.id, max_rows=lim.max_result_rows, max_bytes=lim.max_result_size)
        reply = Reply()

        async def sink(columns: list[str], rows: list[tuple[Any, ...]]) -> int:
            added = builder.add(rows)
            want = builder.next_chunk()
            await self.replies.grow(reply, added, builder.size, want * builder.row_size)
            return want

        try:
            res = await lease.stream(
                req.sql, req.params, sink, chunk_rows=FIRST_CHUNK_ROWS, max_rows=lim.max_result_rows
            )
        except BaseException:
            self.replies.release(reply)
            raise
        reply.message = builder.message(res.columns, res.rowcount)
        return reply

    async def _run_autocommit(self, req: Query | ExecuteMany) -> None:
        pool = self._server.pools.get(req.db)
        if pool is None:
            await self._respond(req, self._unknown_db(req.id, req.db))
            return
        if not self._parallel.take_now():
            await self._parallel.take()
        release: asyncio.Future[None] | None = None
        try:
            release = await self._run_statement(pool, req)
        finally:
            # The statement keeps its parallel slot until its lease is back.
            if release is None or release.done():
                self._parallel.give()
            else:
                release.add_done_callback(self._parallel_back)

    def _parallel_back(self, _: object) -> None:
        self._parallel.give()

    def _slot_back(self, _: object) -> None:
        self._free_slot()

    async def _run_statement(
        self, pool: Pool, req: Query | ExecuteMany
    ) -> asyncio.Future[None] | None:
        """Run one statement on a lease of its own and respond; returns the
        lease's release (None when no lease was had)."""
        try:
            lease = await pool.acquire()
        except PoolError as exc:
            await self._respond(req, error_reply(req.id, exc))
            return None
        discard = True
        resp: Response | Reply | None = None
        try:
            try:
                resp = await self._execute(lease, req)
                discard = False
            except (DatabaseError, ResultTooLarge, UnencodableResult) as exc:
                # the statement failed or was stopped; the connection is fine
                # unless stopping it failed
                discard = not lease.usable
                resp = error_reply(req.id, exc)
            except Exception as exc:
                resp = error_reply(req.id, exc)
                if not isinstance(exc, PoolError):
                    log.exception("dbpool: unexpected error running %s", REQUEST_KINDS[type(req)])
        finally:
            # Runs on cancellation too; the release itself cannot be cancelled.
            # The reset after the statement is a database round trip of its
            # own: with reply_before_release the response does not wait for it.
            release = self._server.start_release(pool, lease, discard=discard)
            if resp is None or not self._server.limits.reply_before_release:
                await asyncio.shield(release)
        # The request keeps its in-flight slot until the lease is back, so one
        # client never holds more than max_in_flight leases, releasing or not.
        # The task does not wait for it: the release frees the slot when done.
        try:
            await self._respond(req, resp, free_slot=False)
        finally:
            if release.done():
                self._free_slot()
            else:
                release.add_done_callback(self._slot_back)
        return release
