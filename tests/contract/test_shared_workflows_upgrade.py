"""Revision 0005 on SQLite and the real PostgreSQL: a database at 0004 keeps its tenants, which come
back with nothing shared with them and can then be shared workflows; downgrading drops the column
and upgrading again restores it."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from nexus.backends.sql import open_state
from nexus.backends.sql.engine import create_state_engine, normalize_url
from nexus.backends.sql.migration import alembic_config, head_revision
from nexus.backends.sql.schema import tenants

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
# Written as revision 0004 had it: without shared_workflows.
TENANT_ROW = {
    "tenant_id": "acme",
    "name": "Acme",
    "config": '{"api_subdomain": "acme"}',
    "status": "active",
    "created_at": T0,
    "suspended_at": None,
    "api_subdomain": "acme",
    "cli_prefix": None,
    "mcp_port": None,
}


def _to_0004(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "0004")


def _down_to_0004(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0004")


def _tenant_columns(connection: Connection) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns("tenants")}


async def _fill_a_0004_database(url: str) -> None:
    engine = create_state_engine(normalize_url(url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_to_0004)
            await connection.execute(text("DELETE FROM tenants"))
            await connection.execute(tenants.insert(), TENANT_ROW)
    finally:
        await engine.dispose()


async def test_a_0004_databases_tenants_survive_the_upgrade_with_nothing_shared(state_url: str) -> None:
    await _fill_a_0004_database(state_url)

    state = await open_state(state_url)
    try:
        async with state.engine.connect() as connection:
            revision = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        before = await state.tenants.get("acme")
        shared = await state.tenants.set_workflow_shared("acme", "report", True)
        after = await state.tenants.get("acme")
    finally:
        await state.close()

    assert revision == head_revision() == "0007"
    assert before is not None
    assert (before.name, before.config.api_subdomain, before.created_at) == ("Acme", "acme", T0)
    assert before.shared_workflows == frozenset()
    assert shared is not None
    assert after == shared
    assert after.shared_workflows == frozenset({"report"})


async def test_downgrading_to_0004_drops_the_column_and_upgrading_restores_it(state_url: str) -> None:
    await (await open_state(state_url)).close()
    engine = create_state_engine(normalize_url(state_url))
    try:
        async with engine.begin() as connection:
            at_head = await connection.run_sync(_tenant_columns)
            await connection.run_sync(_down_to_0004)
            at_0004 = await connection.run_sync(_tenant_columns)
            await connection.execute(text("DELETE FROM tenants"))
            await connection.execute(tenants.insert(), TENANT_ROW)
    finally:
        await engine.dispose()

    state = await open_state(state_url)
    try:
        found = await state.tenants.get("acme")
    finally:
        await state.close()

    assert "shared_workflows" in at_head
    assert "shared_workflows" not in at_0004
    assert at_head - at_0004 == {"shared_workflows", "deleted_at"}  # 0005's and 0006's
    assert found is not None
    assert found.shared_workflows == frozenset()
