"""State URLs, SQLite settings and the in-memory SQLite database of the SQL state store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from nexus.backends.sql import open_state
from nexus.backends.sql.engine import create_state_engine, is_memory_sqlite, normalize_url
from nexus.core.types import Action, ApiKey, AuditRecord, Channel, Outcome
from nexus.errors import ConfigurationError

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///./nexus.db", "sqlite+aiosqlite:///./nexus.db"),
        ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("sqlite+aiosqlite:////var/lib/nexus.db", "sqlite+aiosqlite:////var/lib/nexus.db"),
        ("postgresql://app@db.local:5433/nexus", "postgresql+asyncpg://app@db.local:5433/nexus"),
        ("postgres://app@db.local/nexus", "postgresql+asyncpg://app@db.local/nexus"),
        ("postgresql+asyncpg://app@db.local/nexus", "postgresql+asyncpg://app@db.local/nexus"),
    ],
)
def test_state_urls_are_pinned_to_the_async_driver(url: str, expected: str) -> None:
    assert normalize_url(url) == make_url(expected)


@pytest.mark.parametrize("url", ["mysql://app:pw@db/nexus", "redis://127.0.0.1:6379/0"])
def test_unsupported_databases_are_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not supported"):
        normalize_url(url)


def test_a_sync_driver_is_a_configuration_error_rather_than_silently_replaced() -> None:
    with pytest.raises(ConfigurationError, match="psycopg2"):
        normalize_url("postgresql+psycopg2://app@db/nexus")


def test_text_that_is_no_url_is_rejected_without_repeating_it() -> None:
    with pytest.raises(ConfigurationError) as caught:
        normalize_url("hunter2-is-not-a-url")

    assert "hunter2" not in caught.value.message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite://", True),
        ("sqlite:///:memory:", True),
        ("sqlite:///x.db", False),
        ("postgresql://h/d", False),
    ],
)
def test_only_sqlite_without_a_file_is_an_in_memory_database(url: str, expected: bool) -> None:
    assert is_memory_sqlite(normalize_url(url)) is expected


async def test_sqlite_files_use_wal_full_sync_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_state_engine(normalize_url(f"sqlite:///{tmp_path / 'state.db'}"))
    try:
        async with engine.connect() as connection:
            journal = (await connection.execute(text("PRAGMA journal_mode"))).scalar()
            synchronous = (await connection.execute(text("PRAGMA synchronous"))).scalar()
            busy_timeout = (await connection.execute(text("PRAGMA busy_timeout"))).scalar()
    finally:
        await engine.dispose()

    assert (journal, synchronous) == ("wal", 2)  # 2 is FULL
    assert busy_timeout is not None
    assert busy_timeout > 0


async def test_sqlite_migrations_are_one_transaction(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    state = await open_state(url)
    await state.close()
    engine = create_state_engine(normalize_url(url))
    try:
        async with engine.connect() as connection:
            tables = (
                await connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
            ).all()
    finally:
        await engine.dispose()

    assert {"alembic_version", "api_keys", "audit_records"} <= {name for (name,) in tables}


async def test_in_memory_sqlite_serves_keys_and_audit_concurrently() -> None:
    state = await open_state("sqlite:///:memory:")
    try:
        record = AuditRecord(
            T0, "r", Channel.API, "anonymous", "hello", Action.EXECUTE, Outcome.SUCCESS, None, 1.0
        )
        await asyncio.gather(
            *(state.keys.add(ApiKey(f"k{n}", "n", "h", frozenset(), T0)) for n in range(20)),
            *(state.audit.record(record) for _ in range(20)),
            *(state.keys.list() for _ in range(5)),
        )
        assert len(await state.keys.list()) == 20
        assert len(await state.audit.query()) == 20
    finally:
        await state.close()


async def test_a_sqlite_file_in_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a directory"):
        await open_state(f"sqlite:///{tmp_path / 'missing' / 'state.db'}")


async def test_ping_succeeds_on_an_open_store() -> None:
    state = await open_state("sqlite://")
    try:
        await state.ping()
        assert state.url == "sqlite+aiosqlite://"
    finally:
        await state.close()
