"""How group-committed audit rows reach the database: the one hot write path.

A SQLite file gets `SqliteAppender`, which hands rows to a small appender process that runs the
group commit itself; other databases (PostgreSQL, in-memory SQLite) use `AsyncBatchWriter` under
the sink's writer task. Either extends the hash chain (`nexus.core.audit_chain`) inside the batch's
transaction, holding the chain's row, so concurrent writers on several nodes build one chain.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from typing import Any, Protocol

import orjson
from sqlalchemy import bindparam, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from nexus.backends.sql.engine import is_memory_sqlite
from nexus.backends.sql.schema import CHAIN_ROW, audit_chain, audit_records, sqlite_time_text
from nexus.core.audit_chain import FIELDS, extend

# SQLite binds at most 32766 parameters per statement; 15 columns x 1024 rows stays well below.
_ROWS_PER_STATEMENT = 1024
_CHAIN_COLUMNS = ("seq", "prev_hash", "hash")
_TIME, _DURATION = FIELDS.index("time"), FIELDS.index("duration_ms")
# The chain's newest link, and moving it: one row, locked (FOR UPDATE on PostgreSQL) until commit.
_TAIL = (
    select(audit_chain.c.tail_seq, audit_chain.c.tail_hash)
    .where(audit_chain.c.id == literal_column(str(CHAIN_ROW)))
    .with_for_update()
)
_ADVANCE = (
    update(audit_chain)
    .where(audit_chain.c.id == literal_column(str(CHAIN_ROW)))
    .values(tail_seq=bindparam("tail_seq"), tail_hash=bindparam("tail_hash"))
)


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
            tail_seq, tail_hash = (await connection.execute(_TAIL)).one()
            links = extend(tail_seq, tail_hash, ([row[name] for name in FIELDS] for row in rows))
            chained = [
                row | dict(zip(_CHAIN_COLUMNS, link, strict=True))
                for row, link in zip(rows, links, strict=True)
            ]
            await connection.execute(audit_records.insert(), chained)
            await connection.execute(_ADVANCE, {"tail_seq": links[-1][0], "tail_hash": links[-1][2]})

    async def close(self) -> None:
        return None


class AppendFailedError(Exception):
    """The appender process could not commit some rows (its reason, never a URL or a value)."""


class SqliteAppender:
    """Group commit for a SQLite file through the appender process (`nexus.backends.sqlite_appender`).

    Each `commit` writes one JSON line to the process and waits for the acknowledgement that
    covers it; the process commits whatever has arrived as one multi-row INSERT with its fsync.
    Acknowledgements come back in order, so they settle the oldest waiting callers first. The
    commit happens in another interpreter, so it never competes with request handling for the GIL.
    """

    def __init__(self, engine: AsyncEngine, *, max_batch: int) -> None:
        dialect = engine.sync_engine.dialect
        # The server sends a record's fields; the appender adds its link of the chain after them.
        columns = [audit_records.c[name] for name in FIELDS]
        names = [*FIELDS, *_CHAIN_COLUMNS]
        compiled = audit_records.insert().compile(dialect=dialect, column_keys=names)
        head, values_keyword, row = str(compiled).rpartition(" VALUES ")
        if not values_keyword or row.count("?") != len(names):
            raise RuntimeError(f"unexpected INSERT form for SQLite: {compiled}")
        advance = _ADVANCE.compile(dialect=dialect)
        if list(advance.positiontup or ()) != ["tail_seq", "tail_hash"]:
            raise RuntimeError(f"unexpected UPDATE form for SQLite: {advance}")
        self._config = orjson.dumps(
            {
                "database": engine.url.database,
                "head": f"{head} VALUES ",
                "row": row,
                "rows_per_statement": min(max_batch, _ROWS_PER_STATEMENT),
                "tail": str(_TAIL.compile(dialect=dialect)),
                "advance": str(advance),
            }
        )
        # SQLAlchemy converts two columns on the way in, the time (to naive UTC text) and the
        # duration (to a float); the hot path does both itself, so no other column may need one.
        converted = [
            name
            for name, column in zip(FIELDS, columns, strict=True)
            if column.type.dialect_impl(dialect).bind_processor(dialect) is not None
        ]
        if converted != ["time", "duration_ms"]:
            raise RuntimeError(f"unexpected bind processors for SQLite audit columns: {converted}")
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop the appender's reader runs on, and every commit's acknowledgement with it."""
        self._starting: asyncio.Lock | None = None
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._entering = 0
        self._entered: asyncio.Event | None = None
        self._closed = False
        # Lines handed over in one pass of the event loop go to the appender in one write.
        self._outgoing: list[bytes] = []
        self._outgoing_to: asyncio.subprocess.Process | None = None
        self.records_committed = 0
        self.batches_committed = 0
        self.batches_failed = 0

    async def commit(self, row: dict[str, Any]) -> None:
        """Queue `row`; return once the statement holding it has committed, or raise why not."""
        line = orjson.dumps(self._values(row)) + b"\n"
        self._entering += 1
        try:
            process = self._process
            if process is None or not self._is_running(process):
                process = await self._start()
            loop = self._loop  # the appender's (on 3.11, asking asyncio costs a getpid system call)
            if loop is None:
                raise RuntimeError("the audit appender has no event loop")
            done: asyncio.Future[None] = loop.create_future()
            self._waiting.append(done)
            if process.stdin is None:
                raise RuntimeError("the audit appender has no input pipe")
            if self._outgoing_to is not process:
                self._send_outgoing()
                self._outgoing_to = process
                loop.call_soon(self._send_outgoing)
            self._outgoing.append(line)
        finally:
            self._entering -= 1
            if self._entering == 0 and self._entered is not None:
                self._entered.set()
        await done

    def _send_outgoing(self) -> None:
        """Write the lines gathered since the last write, in one system call, to their appender."""
        process, lines = self._outgoing_to, self._outgoing
        self._outgoing_to, self._outgoing = None, []
        if process is not None and lines and process.stdin is not None and process.returncode is None:
            process.stdin.write(b"".join(lines))

    async def close(self) -> None:
        """Let every commit already under way hand its row over, then let the appender commit what it
        has and exit."""
        while self._entering:
            self._entered = asyncio.Event()
            await self._entered.wait()
        self._send_outgoing()
        self._closed = True
        process, reader = self._process, self._reader
        if process is None or process.stdin is None:
            return
        process.stdin.close()
        await process.wait()
        if reader is not None:
            await reader

    def _is_running(self, process: asyncio.subprocess.Process) -> bool:
        reader = self._reader
        return process.returncode is None and reader is not None and not reader.done()

    @staticmethod
    def _values(row: dict[str, Any]) -> list[Any]:
        values = [row[name] for name in FIELDS]
        values[_TIME] = sqlite_time_text(values[_TIME])
        values[_DURATION] = float(values[_DURATION])
        return values

    async def _start(self) -> asyncio.subprocess.Process:
        if self._closed:
            raise RuntimeError("the audit appender is closed")
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            process = self._process
            if process is not None and self._is_running(process):
                return process
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "nexus.backends.sqlite_appender",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            if process.stdin is None:
                raise RuntimeError("the audit appender has no input pipe")
            process.stdin.write(self._config + b"\n")
            self._process = process
            self._loop = asyncio.get_running_loop()
            self._reader = self._loop.create_task(self._acknowledge(process))
            return process

    async def _acknowledge(self, process: asyncio.subprocess.Process) -> None:
        try:
            while process.stdout is not None and (line := await process.stdout.readline()):
                verb, _, rest = line.decode().rstrip("\n").partition(" ")
                count_text, _, reason = rest.partition(" ")
                count = int(count_text)
                error: BaseException | None = None
                if verb == "ok":
                    self.batches_committed += 1
                    self.records_committed += count
                else:
                    self.batches_failed += 1
                    _log.error("audit appender failed %d records: %s", count, reason)
                    error = AppendFailedError(reason)
                for _ in range(min(count, len(self._waiting))):
                    _settle(self._waiting.popleft(), error)
        finally:
            # The appender is gone: nobody will answer for what still waits; a later commit restarts it.
            while self._waiting:
                _settle(self._waiting.popleft(), AppendFailedError("the audit appender stopped"))


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    # A caller that was cancelled has a done future; its record is committed, or not, with the rest.
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def is_sqlite_file(engine: AsyncEngine) -> bool:
    """True for a SQLite database in a file: the one `SqliteAppender` serves."""
    return engine.url.get_backend_name() == "sqlite" and not is_memory_sqlite(engine.url)
