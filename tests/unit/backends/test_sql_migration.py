"""The shipped Alembic revisions build exactly the tables the stores use."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from nexus.backends.sql import open_state
from nexus.backends.sql.migration import current_revision, head_revision
from nexus.backends.sql.schema import metadata
from nexus.errors import ConfigurationError


def _differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


async def test_migrated_database_matches_the_table_definitions(tmp_path: Path) -> None:
    state = await open_state(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        async with state.engine.connect() as connection:
            differences = await connection.run_sync(_differences)
            revision = await connection.run_sync(current_revision)
    finally:
        await state.close()

    assert differences == []
    assert revision == head_revision()
    assert revision is not None


async def test_a_database_at_an_unknown_newer_revision_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    state = await open_state(url)
    async with state.engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = 'from-the-future'"))
    await state.close()

    with pytest.raises(ConfigurationError, match="does not know"):
        await open_state(url)


def test_the_cheap_head_check_names_the_newest_migration_script() -> None:
    from nexus.backends.sql.upgrade import HEAD_REVISION

    assert head_revision() == HEAD_REVISION
