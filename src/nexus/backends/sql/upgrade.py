"""Bring a state database to the newest schema without loading Alembic into the server process.

A database already at `HEAD_REVISION` costs one SELECT. Otherwise the Alembic upgrade runs in a
child process (see `migration.py`), so its modules never occupy the server's memory. An in-memory
SQLite database exists only inside this process, so it is upgraded here.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from nexus.backends.sql.engine import is_memory_sqlite

HEAD_REVISION: Final = "0007"
"""The newest script in `migrations/versions` (a unit test holds the two together)."""

_ATTEMPTS: Final = 5
EXIT_UNKNOWN_REVISION: Final = 3
EXIT_UNAVAILABLE: Final = 4


class UnknownRevisionError(Exception):
    """The database carries a schema revision this code does not know (a newer Nexus wrote it)."""


class MigrationFailedError(Exception):
    """The upgrade could not run; the message names the driver's failure, never the URL's secret."""


async def stored_revision(engine: AsyncEngine) -> str | None:
    """The revision recorded in the database, or None before its first migration."""
    async with engine.connect() as connection:
        try:
            value = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except DBAPIError:
            return None  # no version table yet; a real connection failure surfaces in the upgrade
    return None if value is None else str(value)


async def migrate(engine: AsyncEngine) -> None:
    """Apply every pending revision; do nothing (one query) when the schema is current."""
    if is_memory_sqlite(engine.url):
        await _migrate_here(engine)
        return
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            if await stored_revision(engine) == HEAD_REVISION:
                return
            await _upgrade_in_child(engine)
            return
        except (MigrationFailedError, DBAPIError) as exc:
            # Processes creating one SQLite file together can meet SQLite's deadlock guard, which
            # answers "locked" at once instead of waiting; the upgrade is idempotent, so go again.
            if attempt == _ATTEMPTS or "locked" not in str(exc):
                raise
            await asyncio.sleep(0.1 * attempt)


async def _upgrade_in_child(engine: AsyncEngine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexus.backends.sql.migration",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await child.communicate(url.encode() + b"\n")
    if child.returncode == EXIT_UNKNOWN_REVISION:
        raise UnknownRevisionError
    if child.returncode != 0:
        lines = errors.decode(errors="replace").strip().splitlines()
        raise MigrationFailedError(lines[-1] if lines else f"the migration exited with {child.returncode}")


async def _migrate_here(engine: AsyncEngine) -> None:
    from alembic.util import CommandError

    from nexus.backends.sql.migration import upgrade

    try:
        await upgrade(engine)
    except CommandError as exc:
        raise UnknownRevisionError from exc
