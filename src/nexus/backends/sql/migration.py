"""Brings a state database to the newest schema with the Alembic scripts shipped in `migrations/`.

Idempotent, and safe when several processes start at once: PostgreSQL serializes them with an
advisory lock, SQLite with a write-locking BEGIN. Servers run it as a child process
(`python -m nexus.backends.sql.migration`, URL on stdin) so Alembic never stays in their memory.
"""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path
from typing import Final
from weakref import WeakKeyDictionary

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from nexus.backends.sql.engine import SQLITE_WRITE_LOCK

SCRIPT_LOCATION: Final = Path(__file__).with_name("migrations")

# Any fixed 63-bit number works; deriving it from a name keeps it recognisable in pg_locks.
_PG_LOCK_KEY: Final = zlib.crc32(b"nexus.backends.sql.migration")

_ALEMBIC_LOCKS: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the shipped scripts, optionally bound to `connection`."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade_on(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Held until this transaction commits: a second process waits, then finds the schema at head.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    if current_revision(connection) == head_revision():
        return
    command.upgrade(alembic_config(connection), "head")


def _loop_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _ALEMBIC_LOCKS.get(loop)
    if lock is None:
        lock = _ALEMBIC_LOCKS[loop] = asyncio.Lock()
    return lock


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every pending revision in one transaction."""
    # Alembic keeps its running context in module globals (`alembic.context`, `alembic.op`), so two
    # upgrades interleaving on one loop would run each other's statements: one at a time per loop.
    async with _loop_lock(), engine.connect() as connection:
        await connection.execution_options(**SQLITE_WRITE_LOCK)
        async with connection.begin():
            await connection.run_sync(_upgrade_on)


async def _upgrade_url(url: str) -> None:
    from nexus.backends.sql.engine import create_state_engine, normalize_url

    engine = create_state_engine(normalize_url(url))
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def main() -> int:
    """Upgrade the database whose URL arrives on stdin (never argv: it may hold a password)."""
    import sys

    from alembic.util import CommandError

    from nexus.backends.sql.engine import STORE_ERRORS, describe_failure
    from nexus.backends.sql.upgrade import EXIT_UNAVAILABLE, EXIT_UNKNOWN_REVISION

    try:
        asyncio.run(_upgrade_url(sys.stdin.readline().strip()))
    except CommandError:
        return EXIT_UNKNOWN_REVISION
    except STORE_ERRORS as exc:
        print(describe_failure(exc), file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
