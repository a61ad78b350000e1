"""Revision 0007 on SQLite and the real PostgreSQL: a database at 0006 keeps its audit records,
which stay unchained (the verifier counts them and says the chain starts after them); records
written afterwards are chained; purges take old unchained records too; downgrading drops the chain
and upgrading again starts a new one after every record."""

from __future__ import annotations

from datetime import timedelta

from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from tests.contract.test_audit_sink import T0, make_record

from nexus.backends.sql import open_state
from nexus.backends.sql.engine import create_state_engine, normalize_url
from nexus.backends.sql.migration import alembic_config, head_revision
from nexus.backends.sql.schema import audit_records

# Written as revision 0006 had them: without seq, prev_hash and hash.
LEGACY_ROWS = [
    {
        "time": T0 + timedelta(days=n),
        "request_id": f"legacy{n}",
        "channel": "api",
        "principal_id": "key:alice",
        "workflow": "report",
        "action": "execute",
        "outcome": "success",
        "error_code": None,
        "duration_ms": 3.5,
        "client_addr": "127.0.0.1",
        "reason": "",
        "tenant_id": None,
    }
    for n in range(3)
]


def _to_0006(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "0006")


def _down_to_0006(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0006")


def _audit_columns(connection: Connection) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns("audit_records")}


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _fill_a_0006_database(url: str) -> None:
    engine = create_state_engine(normalize_url(url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_to_0006)
            await connection.execute(audit_records.insert(), LEGACY_ROWS)
    finally:
        await engine.dispose()


async def test_a_0006_databases_records_stay_unchained_and_new_ones_are_chained(state_url: str) -> None:
    await _fill_a_0006_database(state_url)

    state = await open_state(state_url)
    try:
        async with state.engine.connect() as connection:
            revision = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        before = await state.audit.verify()
        await state.audit.record(make_record("new", time=T0 + timedelta(days=30)))
        after = await state.audit.verify()
        everything = [record.request_id for record in await state.audit.query()]
    finally:
        await state.close()

    assert revision == head_revision() == "0007"
    assert before.intact, before.reason
    assert (before.checked, before.first_seq, before.last_seq, before.unchained) == (0, 1, 0, 3)
    assert after.intact, after.reason
    assert (after.checked, after.first_seq, after.last_seq, after.unchained) == (1, 1, 1, 3)
    assert everything == ["new", "legacy2", "legacy1", "legacy0"]


async def test_a_purge_takes_expired_unchained_records_too(state_url: str) -> None:
    await _fill_a_0006_database(state_url)

    state = await open_state(state_url)
    try:
        removed = await state.audit.purge(T0 + timedelta(days=1, seconds=1))
        left = [record.request_id for record in await state.audit.query()]
        result = await state.audit.verify()
    finally:
        await state.close()

    assert removed == 2
    assert left == ["legacy2"]
    assert (result.intact, result.unchained) == (True, 1)


async def test_downgrading_to_0006_drops_the_chain_and_upgrading_starts_a_new_one(state_url: str) -> None:
    state = await open_state(state_url)
    for n in range(2):
        await state.audit.record(make_record(f"chained{n}"))
    await state.close()
    engine = create_state_engine(normalize_url(state_url))
    try:
        async with engine.begin() as connection:
            at_head = await connection.run_sync(_audit_columns)
            await connection.run_sync(_down_to_0006)
            at_0006 = await connection.run_sync(_audit_columns)
            tables_at_0006 = await connection.run_sync(_tables)
    finally:
        await engine.dispose()

    state = await open_state(state_url)
    try:
        result = await state.audit.verify()
        kept = len(await state.audit.query())
    finally:
        await state.close()

    assert at_head - at_0006 == {"seq", "prev_hash", "hash"}
    assert "audit_chain" not in tables_at_0006
    assert kept == 2
    assert (result.intact, result.checked, result.unchained) == (True, 0, 2)
