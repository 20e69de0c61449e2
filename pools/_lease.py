"""``Lease``: a connection borrowed from a pool, with one error policy for every driver.

Every operation goes through :meth:`Lease._run`, which enforces the lease rules (not
released, one operation at a time, not broken) and maps driver exceptions to the
:mod:`pools` hierarchy in exactly one place:

* the connection died -> :class:`ConnectionLost`; the lease is unusable from then on and
  the pool health-checks its other idle connections before handing them out;
* the database rejected the statement -> :class:`DatabaseError`; the lease stays usable;
* the operation was cancelled (or failed in a way the driver cannot explain) -> the
  exception propagates unchanged and the lease is unusable, since the connection may be
  mid-protocol. Releasing an unusable lease closes its connection instead of reusing it.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from ._config import QueryResult, RowSink, StreamResult
from ._errors import ConnectionLost, DatabaseError, LeaseReleased, PoolError, ResultTooLarge

if TYPE_CHECKING:
    import asyncio

    from ._state import Slot

__all__ = ["Lease"]

T = TypeVar("T")


class _LeaseOwner(Protocol):
    def _lease_connection_lost(self) -> None: ...

    def _lease_statement_error(self) -> None: ...


class Lease(abc.ABC):
    """A borrowed connection. Get one from ``Pool.acquire()`` or ``Pool.lease()``.

    Placeholders are the driver's native style: ``$1`` for PostgreSQL, ``%s`` for MySQL.
    """

    kind: ClassVar[str] = ""

    def __init__(self, owner: _LeaseOwner, slot: Slot[Any]) -> None:
        self._owner = owner
        self._slot = slot
        self._released = False
        self._busy = False
        self._used = False
        self._transacted = False  # opened a transaction (begin, execute_many, or BEGIN sent)
        self._broken: str | None = None
        self._release_task: asyncio.Future[None] | None = None

    # -- driver hooks ------------------------------------------------------------------

    @abc.abstractmethod
    async def _query(self, sql: str, params: Sequence[Any]) -> QueryResult: ...

    @abc.abstractmethod
    async def _stream(
        self,
        sql: str,
        params: Sequence[Any],
        sink: RowSink,
        chunk_rows: int,
        max_rows: int | None,
    ) -> StreamResult:
        """Run one statement, handing its rows to ``sink`` in chunks read from the
        driver (a cursor, an unbuffered read). If ``sink`` raises, stop the
        statement so the connection can be reused, then re-raise. With
        ``max_rows`` the sink refuses more rows than that, so a driver may stop
        reading after ``max_rows + 1``."""

    @abc.abstractmethod
    async def _execute_many(self, sql: str, params_seq: Sequence[Sequence[Any]]) -> int:
        """Run ``sql`` once per parameter set, all or nothing (see `_all_or_nothing`),
        and return the affected-row count."""

    async def _all_or_nothing(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` in a transaction of its own, unless one is open already."""
        if self._driver_in_transaction():
            return await work()
        await self._begin()
        try:
            result = await work()
        except Exception:
            if not self._connection_closed():
                with contextlib.suppress(Exception):  # the original error is the one to report
                    await self._rollback()
            raise
        await self._commit()
        return result

    @abc.abstractmethod
    async def _begin(self) -> None: ...

    @abc.abstractmethod
    async def _commit(self) -> None: ...

    @abc.abstractmethod
    async def _rollback(self) -> None: ...

    @abc.abstractmethod
    def _driver_in_transaction(self) -> bool: ...

    @abc.abstractmethod
    def _connection_closed(self) -> bool: ...

    @abc.abstractmethod
    def _map_error(self, exc: Exception) -> PoolError | None:
        """Return ConnectionLost / DatabaseError for a driver error, None if unknown."""

    @property
    @abc.abstractmethod
    def session_id(self) -> int:
        """The server's id for this connection (PostgreSQL backend pid, MySQL thread id)."""

    # -- public API ----------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        """True from BEGIN until COMMIT/ROLLBACK, as the server reports it."""
        if self._released or self._broken is not None:
            return False
        return self._driver_in_transaction()

    @property
    def released(self) -> bool:
        return self._released

    @property
    def usable(self) -> bool:
        """False once released, or after the connection was lost or an operation cancelled."""
        return not self._released and self._broken is None

    async def query(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        """Run one statement and return its columns, rows and row count."""
        _check_sql(sql)
        return await self._run(self._query, sql, params)

    async def stream(
        self,
        sql: str,
        params: Sequence[Any],
        sink: RowSink,
        *,
        chunk_rows: int = 256,
        max_rows: int | None = None,
    ) -> StreamResult:
        """Run one statement and hand its rows to ``sink`` chunk by chunk, as they are
        read from the database, never holding more than one chunk.

        PostgreSQL reads a statement that returns rows through a cursor (inside
        the lease's transaction, or one opened for the statement and committed
        after it); MySQL reads it unbuffered. If ``sink`` raises `ResultTooLarge`
        (or another `PoolError`) the statement is stopped, the error propagates,
        and the lease stays usable (outside a transaction the statement's own
        transaction is rolled back).

        ``max_rows`` promises that the sink refuses a result of more rows. Then
        PostgreSQL, outside a transaction, reads the statement in one round
        trip with a row limit of ``max_rows + 1`` and no transaction of its
        own; the rows are read whole as long as they stay under
        `ONE_TRIP_BYTES` on the wire (the sink still gets them in chunks), and
        a larger result is cancelled and read through a cursor instead.
        """
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        if max_rows is not None and max_rows < 0:
            raise ValueError("max_rows must not be negative")
        return await self._run(self._stream, sql, params, sink, chunk_rows, max_rows)

    async def query_limited(
        self, sql: str, params: Sequence[Any] = (), *, max_rows: int, max_bytes: int | None = None
    ) -> QueryResult:
        """`query`, read in chunks, refused with `ResultTooLarge` as soon as the result
        has more than ``max_rows`` rows or, with ``max_bytes``, its values more than
        about that many bytes (text and binary values by length, others 8 bytes);
        the rest is not read."""
        rows: list[tuple[Any, ...]] = []
        size = 0

        async def collect(columns: list[str], chunk: list[tuple[Any, ...]]) -> int | None:
            nonlocal size
            if len(rows) + len(chunk) > max_rows:
                raise ResultTooLarge(
                    f"the result has more than {max_rows} rows", rows=len(rows) + len(chunk)
                )
            if max_bytes is not None:
                size += sum(_value_size(v) for row in chunk for v in row)
                if size > max_bytes:
                    raise ResultTooLarge(
                        f"the result is larger than {max_bytes} bytes",
                        rows=len(rows) + len(chunk),
                        size=size,
                    )
            rows.extend(chunk)
            return None

        res = await self.stream(sql, params, collect, max_rows=max_rows)
        return QueryResult(res.columns, rows, res.rowcount)

    async def execute_many(self, sql: str, params_seq: Sequence[Sequence[Any]]) -> int:
        """Run one statement once per parameter set; return the rows affected in total.

        Outside a transaction this is atomic (all parameter sets apply or none).
        """
        _check_sql(sql)
        if not params_seq:
            self._check_usable()
            return 0
        return await self._run(self._execute_many, sql, params_seq)

    async def begin(self) -> None:
        """Open a transaction; the lease stays pinned to it until commit or rollback."""
        self._check_usable()
        if self.in_transaction:
            raise PoolError("a transaction is already open on this lease")
        await self._run(self._begin)

    async def commit(self) -> None:
        """Commit the open transaction (nothing to do outside a transaction)."""
        self._check_usable()
        if self.in_transaction:
            await self._run(self._commit)

    async def rollback(self) -> None:
        """Roll back the open transaction (nothing to do outside a transaction)."""
        self._check_usable()
        if self.in_transaction:
            await self._run(self._rollback)

    def __repr__(self) -> str:
        if self._released:
            state = "released"
        elif self._broken is not None:
            state = "broken"
        elif self._busy:
            state = "busy"
        else:
            state = "in-transaction" if self.in_transaction else "idle"
        return f"<{type(self).__name__} slot={self._slot.id} {state}>"

    # -- machinery -----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._released:
            raise LeaseReleased("this lease was released; acquire a new one")
        if self._broken is not None:
            raise ConnectionLost(self._broken)
        if self._busy:
            raise PoolError("another operation is in progress on this lease")

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        self._check_usable()
        self._busy = True
        self._used = True
        if fn != self._query:
            self._transacted = True  # begin, commit, rollback, execute_many
        try:
            result = await fn(*args)
            if not self._transacted and self._driver_in_transaction():
                self._transacted = True  # a BEGIN sent as a plain statement
            return result
        except BaseException as exc:
            mapped = self._translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            self._busy = False

    def _translate(self, exc: BaseException) -> BaseException:
        if not isinstance(exc, Exception):  # CancelledError, KeyboardInterrupt, ...
            self._broken = (
                "an operation on this lease was interrupted; its connection will be discarded"
            )
            return exc
        mapped = exc if isinstance(exc, PoolError) else self._map_error(exc)
        if isinstance(mapped, ConnectionLost):
            self._broken = str(mapped)
            self._owner._lease_connection_lost()
            return mapped
        if isinstance(mapped, DatabaseError):
            self._owner._lease_statement_error()
            return mapped
        if mapped is not None:
            return mapped
        self._broken = f"the connection is in an unknown state after {exc!r}"
        return exc

    def _detach(self, discard: bool, *, reset_always: bool = True) -> tuple[Slot[Any], bool, bool]:
        """Mark released; return (slot, reusable, needs_reset).

        Without ``reset_always`` only a lease that opened a transaction (or is
        still in one) needs the reset."""
        in_txn = self.usable and self._driver_in_transaction()
        self._released = True
        reusable = (
            not discard
            and self._broken is None
            and not self._busy
            and not self._connection_closed()
        )
        needs = self._used and (reset_always or self._transacted or in_txn)
        return self._slot, reusable, reusable and needs


def _value_size(value: Any) -> int:
    """About how many bytes a value takes in a result (for `Lease.query_limited`)."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        return len(value)
    return 8


def _check_sql(sql: str) -> None:
    """Refuse SQL text that no database accepts before it reaches the connection.

    PostgreSQL's protocol ends the query string at a NUL byte, so sending one
    breaks the connection; refusing it here keeps the lease usable.
    """
    if "\0" in sql:
        raise DatabaseError(
            "SQL text contains a NUL byte (refused before reaching the database)", code="client"
        )
