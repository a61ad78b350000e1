"""Async engines for the SQL state store: URL rules, SQLite durability settings, error translation.

Owns every SQLAlchemy engine option the state store relies on; imports no channel or core logic.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.sql import Executable

from nexus.backends.sqlite_appender import SQLITE_PRAGMAS
from nexus.errors import ConfigurationError, DependencyUnavailableError

DEFAULT_STATE_URL: Final = "sqlite:///./nexus.db"


class _NoStatementRecords(logging.Filter):
    """aiosqlite logs each call with its bound values at DEBUG; those values include secrets
    (TOTP seeds, hashes), so its records never reach a handler, whatever the level is set to."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


class _NoRowRecords(logging.Filter):
    """SQLAlchemy logs every fetched row at DEBUG; rows of the identity tables hold password hashes
    and TOTP seeds. Statements (with parameters hidden) still log; rows never do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Row "))


logging.getLogger("aiosqlite").addFilter(_NoStatementRecords())
logging.getLogger("sqlalchemy.engine.Engine").addFilter(_NoRowRecords())

# Connection loss, refused connects and timeouts (TimeoutError is an OSError) all mean "unavailable".
STORE_ERRORS: Final = (SQLAlchemyError, OSError)

# Execution option that makes the next SQLite transaction take the write lock at BEGIN, so two
# processes migrating one file serialize instead of failing on a stale read snapshot.
SQLITE_WRITE_LOCK: Final = {"nexus_sqlite_begin": "BEGIN IMMEDIATE"}

_DRIVERS: Final = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def normalize_url(url: str | URL) -> URL:
    """Parse a state URL and pin the async driver; `sqlite://` and `postgresql://` are accepted."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        # The raw text may hold a password, so it is not repeated.
        raise ConfigurationError("state_url is not a database URL such as sqlite:///./nexus.db") from exc
    backend = parsed.get_backend_name()
    driver = _DRIVERS.get(backend)
    if driver is None:
        raise ConfigurationError(
            f"state_url scheme {parsed.drivername!r} is not supported; use sqlite:/// or postgresql://"
        )
    if "+" in parsed.drivername and parsed.drivername != driver:
        raise ConfigurationError(
            f"state_url driver {parsed.drivername!r} is not supported; use {driver!r} or no driver"
        )
    return parsed.set(drivername=driver)


def safe_url(url: URL) -> str:
    """Render a URL for messages and logs, with the password masked."""
    return url.render_as_string(hide_password=True)


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_state_engine(url: URL) -> AsyncEngine:
    """Create the engine for a normalized URL; SQLite gets WAL, synchronous=FULL and a busy timeout."""
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, hide_parameters=True)
    options: dict[str, Any] = {}
    if is_memory_sqlite(url):
        # One connection is the whole database. A one-slot queue pool makes concurrent users wait for
        # it; StaticPool would hand the same connection to two transactions at once.
        options = {"poolclass": AsyncAdaptedQueuePool, "pool_size": 1, "max_overflow": 0}
    engine = create_async_engine(url, hide_parameters=True, **options)
    event.listen(engine.sync_engine, "connect", configure_sqlite_connection)
    event.listen(engine.sync_engine, "begin", begin_sqlite_transaction)
    return engine


def configure_sqlite_connection(dbapi_connection: Any, _record: object) -> None:
    # pysqlite's legacy mode skips BEGIN before DDL and SELECT; SQLAlchemy emits BEGIN instead
    # (see begin_sqlite_transaction) so migrations and reads are real transactions.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # The same settings as the audit appender process: WAL, fsync on every commit, waits.
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def begin_sqlite_transaction(connection: Connection) -> None:
    statement = connection.get_execution_options().get("nexus_sqlite_begin", "BEGIN")
    if statement not in ("BEGIN", SQLITE_WRITE_LOCK["nexus_sqlite_begin"]):
        raise ValueError(f"unknown SQLite BEGIN form {statement!r}")
    connection.exec_driver_sql(statement)


def unavailable(message: str, cause: BaseException) -> DependencyUnavailableError:
    """Wrap a driver failure as ours; `message` reaches callers, so it names no host or secret."""
    error = DependencyUnavailableError(message)
    error.__cause__ = cause
    return error


def describe_failure(exc: BaseException) -> str:
    """One line naming a driver failure without the SQL text or bound parameters."""
    orig = getattr(exc, "orig", None)
    inner = orig if isinstance(orig, BaseException) else exc
    text = str(inner).splitlines()[0] if str(inner) else ""
    return f"{type(inner).__name__}: {text}"[:300] if text else type(inner).__name__


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One committed transaction; driver failures become `DependencyUnavailableError`."""
    try:
        async with engine.begin() as connection:
            yield connection
    except STORE_ERRORS as exc:
        raise unavailable("The state store is unavailable.", exc) from exc


async def changed_rows(engine: AsyncEngine, statement: Executable) -> int:
    """Run one UPDATE or DELETE in its own transaction; how many rows it changed.

    Conditional single statements are how the stores stay atomic across processes: of two callers
    racing on one row, only one sees its condition still hold.
    """
    async with transaction(engine) as connection:
        result = await connection.execute(statement)
    return int(result.rowcount)


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads; driver failures become `DependencyUnavailableError`."""
    try:
        async with engine.connect() as connection:
            yield connection
    except STORE_ERRORS as exc:
        raise unavailable("The state store is unavailable.", exc) from exc
