"""Revision 0007 on SQLite and the real PostgreSQL: a database at 0006 keeps its audit records and
has them chained in id order, so they verify intact and new records extend that chain; a row put
in afterwards, whatever its id (below the old records' or negative), breaks verification; purges
take the old records as chained ones; downgrading drops the chain and upgrading chains every record
again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from tests.contract.test_audit_sink import T0, make_record

from nexus.backends.sql import SqlState, open_state
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


async def _fill_a_0006_database(url: str, *, freed_id: int | None = None) -> None:
    engine = create_state_engine(normalize_url(url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_to_0006)
            await connection.execute(audit_records.insert(), LEGACY_ROWS)
            if freed_id is not None:
                await connection.execute(text("DELETE FROM audit_records WHERE id = :id"), {"id": freed_id})
    finally:
        await engine.dispose()


async def _chain_order(state: SqlState) -> list[tuple[str, int]]:
    async with state.engine.connect() as connection:
        rows = await connection.execute(text("SELECT request_id, seq FROM audit_records ORDER BY id"))
        return [(request_id, seq) for request_id, seq in rows]


async def test_a_0006_databases_records_are_chained_in_id_order_and_new_ones_extend_the_chain(
    state_url: str,
) -> None:
    await _fill_a_0006_database(state_url)

    state = await open_state(state_url)
    try:
        async with state.engine.connect() as connection:
            revision = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        before = await state.audit.verify()
        await state.audit.record(make_record("new", time=T0 + timedelta(days=30)))
        after = await state.audit.verify()
        everything = [record.request_id for record in await state.audit.query()]
        order = await _chain_order(state)
    finally:
        await state.close()

    assert revision == head_revision() == "0007"
    assert before.intact, before.reason
    assert (before.checked, before.first_seq, before.last_seq, before.unchained) == (3, 1, 3, 0)
    assert after.intact, after.reason
    assert (after.checked, after.first_seq, after.last_seq, after.unchained) == (4, 1, 4, 0)
    assert everything == ["new", "legacy2", "legacy1", "legacy0"]
    assert order == [("legacy0", 1), ("legacy1", 2), ("legacy2", 3), ("new", 4)]


@pytest.mark.parametrize("forged_id", [2, 0, -1])
async def test_a_row_put_in_after_the_upgrade_breaks_verification_whatever_its_id(
    state_url: str, forged_id: int
) -> None:
    # Id 2 was freed before the upgrade (as a purge at 0006 would): below the old records' highest id.
    await _fill_a_0006_database(state_url, freed_id=2)
    state = await open_state(state_url)
    try:
        before = await state.audit.verify()
        async with state.engine.begin() as connection:
            await connection.execute(audit_records.insert(), [{**LEGACY_ROWS[0], "id": forged_id}])
        forged = [record.request_id for record in await state.audit.query()].count("legacy0")
        result = await state.audit.verify()
    finally:
        await state.close()

    assert before.intact, before.reason
    assert forged == 2
    assert (result.intact, result.unchained, result.head_hash) == (False, 1, before.head_hash)
    assert result.reason == f"a record outside the chain (id {forged_id})"


async def test_a_purge_takes_the_expired_old_records_as_chained_ones(state_url: str) -> None:
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
    assert result.intact, result.reason
    assert (result.checked, result.first_seq, result.last_seq, result.unchained) == (1, 3, 3, 0)


async def test_downgrading_to_0006_drops_the_chain_and_upgrading_chains_every_record_again(
    state_url: str,
) -> None:
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
    assert result.intact, result.reason
    assert (result.checked, result.first_seq, result.last_seq, result.unchained) == (2, 1, 2, 0)
