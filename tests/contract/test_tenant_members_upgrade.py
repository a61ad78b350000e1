"""Revision 0004 on SQLite and the real PostgreSQL: a database at 0003 keeps its keys, users,
sessions and audit records, which come back as the platform's (no tenants); downgrading drops the
columns and upgrading again restores them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection

from nexus.backends.sql import open_state
from nexus.backends.sql.engine import create_state_engine, normalize_url
from nexus.backends.sql.migration import alembic_config, head_revision
from nexus.backends.sql.schema import api_keys, audit_records, sessions, users
from nexus.core.types import Action, AuditRecord, Channel, Outcome

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
# Written as revision 0003 had them: without any of the tenancy columns.
KEY_ROW = {
    "key_id": "k1",
    "name": "ci",
    "secret_hash": "hash-k1",
    "roles": '["deployer"]',
    "created_at": T0,
}
USER_ROW = {
    "user_id": "u1",
    "username": "alice",
    "username_key": "alice",
    "source": "local",
    "roles": '["admin"]',
    "attributes": "{}",
    "disabled": False,
    "created_at": T0,
}
AUDIT_ROW = {
    "time": T0,
    "request_id": "r1",
    "channel": "api",
    "principal_id": "key:k1",
    "workflow": "report",
    "action": "execute",
    "outcome": "success",
    "duration_ms": 1.5,
    "client_addr": "127.0.0.1",
    "reason": "",
}


def _session_row() -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "session_id": "s1",
        "user_id": "u1",
        "username": "alice",
        "method": "password",
        "roles": '["admin"]',
        "attributes": "{}",
        "created_at": now,
        "expires_at": now + timedelta(hours=1),
        "auth_time": now,
        "origin_channel": "api",
        "secret_hash": "hash-s1",
        "mfa_channels": "[]",
    }


def _to_0003(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "0003")


def _down_to_0003(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0003")


def _tenancy_columns(connection: Connection) -> dict[str, set[str]]:
    inspector = inspect(connection)
    wanted = {"api_keys": {"tenants"}, "users": {"tenants"}, "sessions": {"tenant_id", "tenants"}}
    wanted["audit_records"] = {"tenant_id"}
    return {
        table: {column["name"] for column in inspector.get_columns(table)} & names
        for table, names in wanted.items()
    }


async def _fill_a_0003_database(url: str) -> None:
    engine = create_state_engine(normalize_url(url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_to_0003)
            await connection.execute(api_keys.insert(), KEY_ROW)
            await connection.execute(users.insert(), USER_ROW)
            await connection.execute(sessions.insert(), _session_row())
            await connection.execute(audit_records.insert(), AUDIT_ROW)
    finally:
        await engine.dispose()


async def test_a_0003_databases_rows_survive_the_upgrade_as_the_platforms(state_url: str) -> None:
    await _fill_a_0003_database(state_url)

    state = await open_state(state_url)
    try:
        async with state.engine.connect() as connection:
            revision = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        key = await state.keys.get("k1")
        user = await state.users.get("u1")
        session = await state.sessions.get("s1")
        (record,) = await state.audit.query()
        of_a_tenant = await state.audit.query(tenant_id="acme")
    finally:
        await state.close()

    assert revision == head_revision()
    assert key is not None
    assert (key.roles, key.tenants) == (frozenset({"deployer"}), frozenset())
    assert user is not None
    assert (user.roles, user.tenants) == (frozenset({"admin"}), frozenset())
    assert session is not None
    assert (session.user_id, session.tenant_id, session.tenants) == ("u1", None, frozenset())
    assert (record.request_id, record.tenant_id) == ("r1", None)
    assert list(of_a_tenant) == []


async def test_an_upgraded_database_takes_tenants_like_a_new_one(state_url: str) -> None:
    await _fill_a_0003_database(state_url)
    record = AuditRecord(
        time=T0 + timedelta(seconds=1),
        request_id="r2",
        channel=Channel.CLI,
        principal_id="key:k2",
        workflow="report",
        action=Action.EXECUTE,
        outcome=Outcome.SUCCESS,
        error_code=None,
        duration_ms=2.0,
        tenant_id="acme",
    )

    state = await open_state(state_url)
    try:
        user = await state.users.get("u1")
        assert user is not None
        await state.users.update(replace(user, tenants=frozenset({"acme"})))
        await state.audit.record(record)
        moved = await state.users.get("u1")
        found = await state.audit.query(tenant_id="acme")
    finally:
        await state.close()

    assert moved is not None
    assert moved.tenants == frozenset({"acme"})
    assert list(found) == [record]


async def test_downgrading_to_0003_drops_the_tenancy_columns_and_upgrading_restores_them(
    state_url: str,
) -> None:
    await (await open_state(state_url)).close()
    engine = create_state_engine(normalize_url(state_url))
    try:
        async with engine.begin() as connection:
            at_head = await connection.run_sync(_tenancy_columns)
            await connection.run_sync(_down_to_0003)
            at_0003 = await connection.run_sync(_tenancy_columns)
            await connection.execute(audit_records.insert(), AUDIT_ROW)
    finally:
        await engine.dispose()

    state = await open_state(state_url)
    try:
        (record,) = await state.audit.query()
    finally:
        await state.close()

    assert at_head == {
        "api_keys": {"tenants"},
        "users": {"tenants"},
        "sessions": {"tenant_id", "tenants"},
        "audit_records": {"tenant_id"},
    }
    assert at_0003 == {"api_keys": set(), "users": set(), "sessions": set(), "audit_records": set()}
    assert (record.request_id, record.tenant_id) == ("r1", None)


async def test_a_tenants_newest_records_are_read_in_order_from_the_tenant_index(state_url: str) -> None:
    state = await open_state(state_url)
    issued: list[tuple[str, object]] = []

    def keep(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if "FROM audit_records" in statement:
            issued.append((statement, parameters))

    event.listen(state.engine.sync_engine, "before_cursor_execute", keep)
    try:
        await state.audit.query(tenant_id="acme", limit=10)
        event.remove(state.engine.sync_engine, "before_cursor_execute", keep)
        ((statement, parameters),) = issued
        async with state.engine.connect() as connection:
            plan = await connection.run_sync(lambda sync: _plan(sync, statement, parameters))
    finally:
        await state.close()

    assert "ix_audit_records_tenant_id_time" in plan
    assert "TEMP B-TREE" not in plan  # SQLite: no sort step
    assert "Sort" not in plan  # PostgreSQL: no sort step


def _plan(connection: Connection, statement: str, parameters: object) -> str:
    cursor = connection.connection.cursor()
    if connection.dialect.name == "sqlite":
        cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
    else:
        # An empty table is cheapest to scan; forbid that to see the plan the index allows.
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(f"EXPLAIN {statement}", parameters)
    return "\n".join(str(row) for row in cursor.fetchall())
