"""How one group-commit batch of audit rows reaches the database: the one hot write path.

A SQLite file is written on one dedicated thread with one connection, so a batch is a single hop
off the event loop (BEGIN, INSERT of every row, COMMIT with its fsync) instead of one aiosqlite
round trip per statement. Other databases use the async engine's own connection pool.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
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


class ThreadBatchWriter:
    """A SQLite file, written from one dedicated thread (SQLite has one writer at a time anyway).

    The INSERT is compiled by SQLAlchemy once and each column's own bind processor converts the
    values, so rows are stored exactly as through the engine, minus its per-statement overhead.
    A batch is ONE multi-row INSERT in autocommit mode: SQLite runs it as its own transaction, so
    the insert, the commit and its fsync happen in one call that holds no GIL. Each extra call
    would make this thread queue for the GIL behind the busy event loop thread again.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        url = engine.url.set(drivername="sqlite+pysqlite")
        self._engine: Engine = create_engine(url, poolclass=NullPool)
        event.listen(self._engine, "connect", configure_sqlite_connection)
        dialect = self._engine.dialect
        columns = [column for column in audit_records.columns if not column.primary_key]
        compiled = audit_records.insert().compile(dialect=dialect, column_keys=[c.name for c in columns])
        self._sql = str(compiled)
        head, values_keyword, row = self._sql.rpartition(" VALUES ")
        if not values_keyword or row.count("?") != len(columns):
            raise RuntimeError(f"unexpected INSERT form for SQLite: {self._sql!r}")
        self._head, self._row = f"{head} VALUES ", row
        self._statements: dict[int, str] = {}
        self._names = [column.name for column in columns]
        self._processors = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nexus-audit")
        self._connection: Any = None
        self._closed = False

    async def write(self, rows: list[dict[str, Any]]) -> None:
        chunks = [
            (self._statement(len(chunk)), [value for row in chunk for value in self._values(row)])
            for chunk in (rows[i : i + _ROWS_PER_STATEMENT] for i in range(0, len(rows), _ROWS_PER_STATEMENT))
        ]
        await asyncio.get_running_loop().run_in_executor(self._thread, self._write, chunks)

    def _statement(self, count: int) -> str:
        statement = self._statements.get(count)
        if statement is None:
            statement = self._statements[count] = self._head + ", ".join([self._row] * count)
        return statement

    def _values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            value if process is None else process(value)
            for value, process in zip((row[name] for name in self._names), self._processors, strict=True)
        )

    def _write(self, chunks: list[tuple[str, list[Any]]]) -> None:
        try:
            if self._connection is None:
                self._connection = self._engine.raw_connection()
            for statement, values in chunks:
                # Autocommit (isolation_level None, set at connect): the statement is the transaction.
                self._connection.driver_connection.execute(statement, values)
        except sqlite3.Error as exc:
            # A connection in an unknown state is not reused; the next batch opens a fresh one.
            self._discard()
            # The same exception the async engine would raise, so the sink treats both alike.
            raise DBAPIError.instance(self._sql, None, exc, sqlite3.Error) from exc

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.invalidate()

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
        self._engine.dispose()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)


def batch_writer_for(engine: AsyncEngine) -> BatchWriter:
    """The fastest durable writer for `engine`'s database."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and not is_memory_sqlite(url):
        return ThreadBatchWriter(engine)
    return AsyncBatchWriter(engine)
