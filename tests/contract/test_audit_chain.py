"""The audit hash chain on SQLite and the real PostgreSQL: rows changed, deleted or reordered directly
in the database are found at the exact record; purges keep the rest verifiable and never erase a
break; concurrent writers and purgers on one database build and keep one chain."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.contract.test_audit_sink import T0, make_record

from nexus.backends.sql import SqlState, open_state
from nexus.backends.sql.audit_sink import _to_row
from nexus.backends.sql.schema import audit_records
from nexus.errors import AuditIntegrityError


async def _fill(state: SqlState, count: int, *, days_apart: bool = False) -> None:
    for n in range(1, count + 1):
        step = timedelta(days=n) if days_apart else timedelta(milliseconds=n)
        await state.audit.record(make_record(f"r{n}", time=T0 + step))


async def _execute(state: SqlState, statement: str, **params: object) -> None:
    async with state.engine.begin() as connection:
        await connection.execute(text(statement), params)


async def _seq_of(state: SqlState, request_id: str) -> int:
    async with state.engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT seq FROM audit_records WHERE request_id = :r"), {"r": request_id}
        )
    assert isinstance(found, int)
    return found


async def test_a_reason_altered_in_the_database_is_found_at_that_record(sql_state: SqlState) -> None:
    await _fill(sql_state, 6)
    seq = await _seq_of(sql_state, "r4")
    await _execute(sql_state, "UPDATE audit_records SET reason = 'nothing to see' WHERE seq = :s", s=seq)

    result = await sql_state.audit.verify()

    assert not result.intact
    assert result.broken_seq == seq == 4
    assert result.reason == "record 4's fields do not match its hash: it was altered"
    assert result.checked == 3


async def test_a_time_moved_in_the_database_is_found_at_that_record(sql_state: SqlState) -> None:
    await _fill(sql_state, 3)
    await _execute(
        sql_state,
        "UPDATE audit_records SET time = :t WHERE seq = 2",
        t=T0.replace(tzinfo=None) + timedelta(days=1),
    )

    result = await sql_state.audit.verify()

    assert (result.intact, result.broken_seq) == (False, 2)


async def test_a_middle_row_deleted_in_the_database_is_named(sql_state: SqlState) -> None:
    await _fill(sql_state, 6)
    await _execute(sql_state, "DELETE FROM audit_records WHERE request_id = 'r3'")

    result = await sql_state.audit.verify()

    assert (result.intact, result.broken_seq) == (False, 3)
    assert result.reason == "record 3 is missing"
    assert result.checked == 2


async def test_two_rows_reordered_in_the_database_are_found_at_the_first_of_them(sql_state: SqlState) -> None:
    await _fill(sql_state, 5)
    # Swap the sequence numbers of records 2 and 3 (through -1: the column is unique).
    await _execute(sql_state, "UPDATE audit_records SET seq = -1 WHERE seq = 2")
    await _execute(sql_state, "UPDATE audit_records SET seq = 2 WHERE seq = 3")
    await _execute(sql_state, "UPDATE audit_records SET seq = 3 WHERE seq = -1")

    result = await sql_state.audit.verify()

    assert (result.intact, result.broken_seq) == (False, 2)
    assert result.reason == "record 2's prev_hash does not match the hash of record 1"


async def test_the_newest_rows_deleted_in_the_database_are_found(sql_state: SqlState) -> None:
    await _fill(sql_state, 5)
    await _execute(sql_state, "DELETE FROM audit_records WHERE seq >= 4")

    result = await sql_state.audit.verify()

    assert (result.intact, result.broken_seq) == (False, 4)
    assert result.reason == "records 4 to 5 are missing"


async def _forge(state: SqlState, record_id: int | None = None) -> None:
    """Insert a record as an intruder would, past the audit writer; with `record_id` if given."""
    row = _to_row(make_record("forged", principal_id="key:mallory"))
    if record_id is not None:
        row["id"] = record_id
    async with state.engine.begin() as connection:
        await connection.execute(audit_records.insert().values(row))


async def test_a_row_inserted_without_the_writer_is_found(sql_state: SqlState) -> None:
    await _fill(sql_state, 2)
    await _forge(sql_state)

    result = await sql_state.audit.verify()

    assert not result.intact
    assert result.reason is not None
    assert result.reason.startswith("a record outside the chain (id ")


@pytest.mark.parametrize("forged_id", [-1, 0])
async def test_a_row_forged_with_an_id_below_every_chained_one_is_found_and_kept(
    sql_state: SqlState, forged_id: int
) -> None:
    await _fill(sql_state, 3, days_apart=True)
    before = await sql_state.audit.verify()
    await _forge(sql_state, forged_id)

    result = await sql_state.audit.verify()
    removed = await sql_state.audit.purge(T0 + timedelta(days=10))
    after_purge = await sql_state.audit.verify()

    assert before.intact, before.reason
    assert (result.intact, result.unchained, result.head_hash) == (False, 1, before.head_hash)
    assert result.reason == f"a record outside the chain (id {forged_id})"
    assert removed == 3
    assert [record.request_id for record in await sql_state.audit.query()] == ["forged"]
    assert (after_purge.intact, after_purge.reason) == (False, result.reason)


async def test_a_purge_keeps_what_is_left_verifiable_over_several_chunks(state_url: str) -> None:
    state = await open_state(state_url, audit_max_batch=3000)
    try:
        await asyncio.gather(
            *(state.audit.record(make_record(f"r{n}", time=T0 + timedelta(seconds=n))) for n in range(2600))
        )

        removed = await state.audit.purge(T0 + timedelta(seconds=2500))
        result = await state.audit.verify()
    finally:
        await state.close()

    assert removed == 2500
    assert result.intact, result.reason
    assert (result.checked, result.first_seq, result.last_seq) == (100, 2501, 2600)


async def test_a_purge_meeting_a_break_deletes_none_of_it_and_verify_still_shows_it(
    sql_state: SqlState,
) -> None:
    await _fill(sql_state, 6, days_apart=True)
    await _execute(sql_state, "UPDATE audit_records SET principal_id = 'key:bob' WHERE seq = 3")

    with pytest.raises(AuditIntegrityError, match="record 3's fields do not match"):
        await sql_state.audit.purge(T0 + timedelta(days=5))
    result = await sql_state.audit.verify()

    assert len(await sql_state.audit.query()) == 6
    assert (result.intact, result.broken_seq) == (False, 3)


async def test_purges_racing_on_two_nodes_delete_each_expired_record_once(state_url: str) -> None:
    first, second = await open_state(state_url), await open_state(state_url)
    try:
        await asyncio.gather(
            *(first.audit.record(make_record(f"r{n}", time=T0 + timedelta(seconds=n))) for n in range(300))
        )
        cutoff = T0 + timedelta(seconds=200)

        removed = await asyncio.gather(first.audit.purge(cutoff), second.audit.purge(cutoff))
        result = await second.audit.verify()
    finally:
        await first.close()
        await second.close()

    assert sum(removed) == 200
    assert result.intact, result.reason
    assert (result.first_seq, result.last_seq) == (201, 300)


async def test_two_nodes_writing_at_once_build_one_intact_chain(state_url: str) -> None:
    first = await open_state(state_url, audit_max_batch=8)
    second = await open_state(state_url, audit_max_batch=8)
    try:
        # In waves, so each node's batches follow the other's and must extend the chain from the
        # tail the other one wrote; within a wave the two commit at the same time.
        for wave in range(25):
            await asyncio.gather(
                *(
                    (first if n % 2 else second).audit.record(make_record(f"{'ab'[n % 2]}{n}"))
                    for n in range(wave * 16, wave * 16 + 16)
                )
            )
        result = await first.audit.verify()
        async with first.engine.connect() as connection:
            order = (
                await connection.execute(text("SELECT request_id FROM audit_records ORDER BY seq"))
            ).scalars()
            nodes = "".join(request_id[0] for request_id in order)
    finally:
        await first.close()
        await second.close()

    assert result.intact, result.reason
    assert (result.checked, result.last_seq) == (400, 400)
    assert sorted(nodes) == ["a"] * 200 + ["b"] * 200
    assert nodes.count("ab") + nodes.count("ba") > 2, nodes  # the two nodes' batches alternated


async def test_writing_while_purging_keeps_one_intact_chain(state_url: str) -> None:
    writer, purger = await open_state(state_url), await open_state(state_url)
    try:
        await _fill(writer, 50)

        async def purge_repeatedly() -> int:
            total = 0
            for _ in range(10):
                total += await purger.audit.purge(T0 + timedelta(seconds=1))
                await asyncio.sleep(0)
            return total

        writes = asyncio.gather(
            *(writer.audit.record(make_record(f"w{n}", time=T0 + timedelta(days=1))) for n in range(200))
        )
        removed, _ = await asyncio.gather(purge_repeatedly(), writes)
        result = await purger.audit.verify()
    finally:
        await writer.close()
        await purger.close()

    assert removed == 50
    assert result.intact, result.reason
    assert (result.checked, result.first_seq, result.last_seq) == (200, 51, 250)


async def test_verification_pages_through_more_records_than_one_read(tmp_path: Path) -> None:
    state = await open_state(f"sqlite:///{tmp_path / 'big.db'}", audit_max_batch=5000)
    try:
        await asyncio.gather(*(state.audit.record(make_record(f"r{n}")) for n in range(4500)))
        await _execute(state, "UPDATE audit_records SET reason = 'x' WHERE seq = 4321")
        result = await state.audit.verify()
    finally:
        await state.close()

    assert (result.intact, result.broken_seq, result.checked) == (False, 4321, 4320)
