"""Transactions of a dbpool session: ``begin`` pins one lease to a `Txn` whose
worker task runs, strictly in arrival order, every later request addressed to the
same database until ``commit`` or ``rollback``; a lease left behind by a client
that went away is given back (rolled back, or discarded when interrupted).
"""

from __future__ import annotations

import logging

from pools import ConnectionLost, DatabaseError, PoolError, ResultTooLarge

from .protocol import Begin, Commit, Done, Error, ExecuteMany, Query, Response, Rollback
from .results import UnencodableResult
from .running import StatementRunner
from .session_io import Txn, error_reply

__all__ = ["Transactions"]

log = logging.getLogger("services.dbpool")


class Transactions(StatementRunner):
    """A session's transactions, each pinned to one lease."""

    async def _run_transaction(self, txn: Txn, begin: Begin) -> None:
        try:
            await self._open_transaction(txn, begin)
            while True:
                req = await txn.queue.get()
                if isinstance(req, Commit | Rollback):
                    await self._finish_transaction(txn, req)
                    return
                assert isinstance(req, Query | ExecuteMany)
                await self._in_transaction(txn, req)
        finally:
            self.txns.discard(txn)
            if txn.lease is not None and txn.pool is not None:  # the client went away
                lease, txn.lease = txn.lease, None
                self._server.transactions_abandoned += 1
                await self._server.give_back(txn.pool, lease, discard=txn.busy)

    async def _open_transaction(self, txn: Txn, begin: Begin) -> None:
        pool = txn.pool
        if pool is None:
            await self._respond(begin, self._unknown_db(begin.id, begin.db))
            return
        try:
            lease = txn.lease = await pool.acquire()
        except PoolError as exc:
            await self._respond(begin, error_reply(begin.id, exc))
            return
        try:
            txn.busy = True
            await lease.begin()
            txn.busy = False
        except Exception as exc:
            txn.lease = None
            discard = not isinstance(exc, DatabaseError)
            await self._server.give_back(pool, lease, discard=discard)
            await self._respond(begin, error_reply(begin.id, exc))
            return
        await self._respond(begin, Done(begin.id))

    async def _in_transaction(self, txn: Txn, req: Query | ExecuteMany) -> None:
        lease = txn.lease
        if lease is None or txn.pool is None:
            await self._respond(req, aborted(req.id))
            return
        try:
            txn.busy = True
            resp = await self._execute(lease, req)
            txn.busy = False
        except (DatabaseError, ResultTooLarge, UnencodableResult) as exc:
            txn.busy = False
            resp = error_reply(req.id, exc)
            if not lease.usable:  # stopping the statement failed: the transaction is lost
                txn.lease = None
                await self._server.give_back(txn.pool, lease, discard=True)
        except Exception as exc:
            # The connection is gone or in an unknown state: the transaction is lost.
            txn.lease = None
            txn.busy = False
            await self._server.give_back(txn.pool, lease, discard=True)
            resp = error_reply(req.id, exc)
            if not isinstance(exc, ConnectionLost):
                log.exception("dbpool: unexpected error in a transaction")
        await self._respond(req, resp)

    async def _finish_transaction(self, txn: Txn, req: Commit | Rollback) -> None:
        lease = txn.lease
        if lease is None or txn.pool is None:
            resp: Response = Done(req.id) if isinstance(req, Rollback) else aborted(req.id)
            await self._respond(req, resp)
            return
        discard = True
        try:
            txn.busy = True
            await (lease.commit() if isinstance(req, Commit) else lease.rollback())
            discard = False
            resp = Done(req.id)
        except DatabaseError as exc:
            discard = False
            resp = error_reply(req.id, exc)
        except Exception as exc:
            resp = error_reply(req.id, exc)
        finally:
            if txn.lease is not None:
                txn.lease = None
                await self._server.give_back(txn.pool, lease, discard=discard)
            txn.busy = False
        await self._respond(req, resp)


def aborted(rid: int) -> Error:
    msg = "the transaction failed to begin or lost its connection; send rollback"
    return Error(rid, "transaction_aborted", None, msg)
