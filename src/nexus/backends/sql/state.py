"""The SQL state store: one engine, migrated at open, exposing the key, audit, identity and tenant stores.

`open_state(url)` is the only way in; SQLite (the default file) and PostgreSQL are chosen by URL.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from nexus.backends.sql.audit_sink import DEFAULT_MAX_BATCH, SqlAuditSink
from nexus.backends.sql.engine import (
    DEFAULT_STATE_URL,
    STORE_ERRORS,
    create_state_engine,
    describe_failure,
    is_memory_sqlite,
    normalize_url,
    reading,
    safe_url,
    unavailable,
)
from nexus.backends.sql.factor_store import SqlFactorStore
from nexus.backends.sql.key_store import SqlKeyStore
from nexus.backends.sql.session_store import SqlSessionStore
from nexus.backends.sql.signing_key_store import SqlSigningKeyStore
from nexus.backends.sql.tenant_store import SqlTenantStore
from nexus.backends.sql.upgrade import MigrationFailedError, UnknownRevisionError, migrate
from nexus.backends.sql.user_store import SqlUserStore
from nexus.errors import ConfigurationError, DependencyUnavailableError


class SqlState:
    """The opened state database; every store shares its engine. Close it once, at shutdown."""

    def __init__(self, engine: AsyncEngine, *, audit_max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.engine = engine
        self.keys = SqlKeyStore(engine)
        self.audit = SqlAuditSink(engine, max_batch=audit_max_batch)
        self.users = SqlUserStore(engine)
        self.factors = SqlFactorStore(engine)
        self.sessions = SqlSessionStore(engine)
        self.signing_keys = SqlSigningKeyStore(engine)
        self.tenants = SqlTenantStore(engine)

    @property
    def url(self) -> str:
        """The database URL with the password masked."""
        return safe_url(self.engine.url)

    async def ping(self) -> None:
        """Round-trip to the database; raises `DependencyUnavailableError` when it cannot."""
        async with reading(self.engine) as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Commit pending audit records, then release every connection."""
        try:
            await self.audit.close()
        finally:
            await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def open_state(url: str = DEFAULT_STATE_URL, *, audit_max_batch: int = DEFAULT_MAX_BATCH) -> SqlState:
    """Connect to `url`, apply pending migrations and return the store.

    Raises:
        ConfigurationError: the URL is not a supported database, or its schema is newer than this code.
        DependencyUnavailableError: the database cannot be reached or opened.
    """
    parsed = normalize_url(url)
    _require_sqlite_directory(parsed)
    engine = create_state_engine(parsed)
    try:
        await migrate(engine)
    except UnknownRevisionError as exc:
        await engine.dispose()
        raise ConfigurationError(
            f"The state database {safe_url(parsed)} has a schema this version of Nexus does not know."
        ) from exc
    except MigrationFailedError as exc:
        await engine.dispose()
        error = DependencyUnavailableError(f"Cannot open the state database {safe_url(parsed)}: {exc}")
        raise error from exc
    except STORE_ERRORS as exc:
        await engine.dispose()
        # Start-up message for the operator: the URL helps, and render_as_string masks the password.
        message = f"Cannot open the state database {safe_url(parsed)}: {describe_failure(exc)}"
        raise unavailable(message, exc) from exc
    except BaseException:
        await engine.dispose()
        raise
    return SqlState(engine, audit_max_batch=audit_max_batch)


def _require_sqlite_directory(url: URL) -> None:
    # SQLite would fail to create the file anyway; saying which directory is missing is clearer.
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url) or url.database is None:
        return
    directory = Path(url.database).expanduser().parent
    if not directory.is_dir():
        raise ConfigurationError(
            f"state_url names a SQLite file in {str(directory)!r}, which is not a directory."
        )
