"""How group-committed audit rows reach the database: the one hot write path.

A SQLite file gets `SqliteWriterThread`, a thread that runs the group commit itself; other
databases (PostgreSQL, in-memory SQLite) use `AsyncBatchWriter` under the sink's writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from typing import Any, Protocol

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from nexus.backends.sql.engine import configure_sqlite_connection, is_memory_sqlite
from nexus.backends.sql.schema import audit_records

# SQLite binds at most 32766 parameters per statement; 11 columns x 1024 rows stays well below.
_ROWS_PER_STATEMENT = 1024


_log = logging.getLogger("nexus.backends.sql.audit_sink")


class BatchWriter(Protocol):
    async def write(self, rows: list[dict[str, Any]]) -> None:
        """Insert `rows` in one committed transaction, or raise the driver's error."""
        ...

    async def close(self) -> None: ...


class AsyncBatchWriter:
    """Through the async engine (PostgreSQL via asyncpg, in-memory SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def write(self, rows: list[dict[str, Any]]) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(audit_records.insert(), rows)

    async def close(self) -> None:
        return None


class SqliteWriterThread:
    """Group commit for a SQLite file, driven by one thread of its own.

    Callers queue rows and wait on a future; the thread takes everything queued (up to
    `max_batch`), writes it as ONE multi-row INSERT in autocommit mode (insert, commit and fsync in
    a single call that holds no GIL), wakes those callers, and goes straight on to what queued
    meanwhile. The commit cadence therefore never waits for the busy event loop to schedule it,
    and each batch needs the GIL only to start and to hand back its results.
    """

    def __init__(self, engine: AsyncEngine, *, max_batch: int) -> None:
        url = engine.url.set(drivername="sqlite+pysqlite")
        self._engine: Engine = create_engine(url, poolclass=NullPool)
        event.listen(self._engine, "connect", configure_sqlite_connection)
        dialect = self._engine.dialect
        columns = [column for column in audit_records.columns if not column.primary_key]
        compiled = audit_records.insert().compile(dialect=dialect, column_keys=[c.name for c in columns])
        head, values_keyword, row = str(compiled).rpartition(" VALUES ")
        if not values_keyword or row.count("?") != len(columns):
            raise RuntimeError(f"unexpected INSERT form for SQLite: {compiled}")
        self._head, self._row = f"{head} VALUES ", row
        self._statements: dict[int, str] = {}
        self._names = [column.name for column in columns]
        self._processors = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]
        self._max_batch = max_batch
        # SimpleQueue: a put from the event loop is one C call, with no lock for the loop to wait on.
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._connection: Any = None
        self.records_committed = 0
        self.batches_committed = 0
        self.batches_failed = 0

    async def commit(self, row: dict[str, Any]) -> None:
        """Queue `row`; return once the statement holding it has committed, or raise its error."""
        if self._closing:
            raise RuntimeError("the audit writer is closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put((self._values(row), done))
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._start_thread()
        await done

    def _start_thread(self) -> None:
        # Also restarts a thread that died, so queued callers are never left waiting on nobody.
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="nexus-audit", daemon=True)
                self._thread.start()

    async def close(self) -> None:
        """Write what is queued, then stop the thread and release the connection."""
        self._closing = True
        with self._start:
            thread = self._thread
        if thread is not None:
            self._queue.put(None)  # after everything queued before it: FIFO
            await asyncio.to_thread(thread.join)
        self._engine.dispose()

    def _values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            value if process is None else process(value)
            for value, process in zip((row[name] for name in self._names), self._processors, strict=True)
        )

    def _statement(self, count: int) -> str:
        statement = self._statements.get(count)
        if statement is None:
            statement = self._statements[count] = self._head + ", ".join([self._row] * count)
        return statement

    def _next_batch(self) -> tuple[list[_Queued], bool]:
        """Block for one record, then take what else is queued; the flag says "stop after these"."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            if not batch:
                continue
            error = self._write([values for values, _ in batch])
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for _, done in batch:
                by_loop.setdefault(done.get_loop(), []).append(done)
            for loop, waiting in by_loop.items():
                # One wake-up per loop per batch; a loop closed meanwhile has no caller left to wake.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle_all, waiting, error)
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _write(self, rows: list[tuple[Any, ...]]) -> BaseException | None:
        try:
            if self._connection is None:
                self._connection = self._engine.raw_connection()
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[start : start + _ROWS_PER_STATEMENT]
                values = [value for row in chunk for value in row]
                # Autocommit (isolation_level None, set at connect): the statement is the transaction.
                self._connection.driver_connection.execute(self._statement(len(chunk)), values)
        except Exception as exc:  # noqa: BLE001  # every failure goes back to the batch's callers
            _log.exception("audit batch of %d records failed to commit", len(rows))
            self.batches_failed += 1
            # A connection in an unknown state is not reused; the next batch opens a fresh one.
            connection, self._connection = self._connection, None
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.invalidate()
            if isinstance(exc, sqlite3.Error):
                # The exception the async engine would raise, so callers see one kind of failure.
                return DBAPIError.instance(self._head, None, exc, sqlite3.Error)
            return exc
        self.batches_committed += 1
        self.records_committed += len(rows)
        return None


_Queued = tuple[tuple[Any, ...], asyncio.Future[None]]


def _settle_all(waiting: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for done in waiting:
        # A caller that was cancelled has a done future; its record is committed, or not, with the rest.
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def is_sqlite_file(engine: AsyncEngine) -> bool:
    """True for a SQLite database in a file: the one `SqliteWriterThread` serves."""
    return engine.url.get_backend_name() == "sqlite" and not is_memory_sqlite(engine.url)
