"""The `AuditSink` contract, run against memory, SQLite and the real PostgreSQL.

SQL-only sections pin what memory cannot show: durability across reopening, group commit and failures.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from nexus.backends.sql import SqlState, open_state
from nexus.backends.sql.schema import audit_records
from nexus.core.ports import AuditSink
from nexus.core.types import Action, AuditRecord, Channel, Outcome
from nexus.errors import DependencyUnavailableError

T0 = datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


def make_record(
    request_id: str = "r1",
    *,
    time: datetime = T0,
    workflow: str = "report",
    principal_id: str = "key:alice",
    tenant_id: str | None = None,
) -> AuditRecord:
    return AuditRecord(
        time=time,
        request_id=request_id,
        channel=Channel.MCP,
        principal_id=principal_id,
        workflow=workflow,
        action=Action.EXECUTE,
        outcome=Outcome.FORBIDDEN,
        error_code="forbidden",
        duration_ms=12.5,
        client_addr="127.0.0.1",
        reason="rbac: role analyst lacks execute on report",
        tenant_id=tenant_id,
    )


async def test_recorded_entry_is_returned_by_query_with_every_field(audit_sink: AuditSink) -> None:
    record = make_record(tenant_id="acme")

    await audit_sink.record(record)

    assert list(await audit_sink.query()) == [record]


async def test_an_entry_without_error_code_or_reason_round_trips(audit_sink: AuditSink) -> None:
    record = AuditRecord(
        time=T0,
        request_id="r1",
        channel=Channel.CLI,
        principal_id="anonymous",
        workflow="hello",
        action=Action.READ,
        outcome=Outcome.SUCCESS,
        error_code=None,
        duration_ms=0.0,
    )

    await audit_sink.record(record)

    assert list(await audit_sink.query()) == [record]


async def test_query_returns_newest_first_whatever_the_recording_order(audit_sink: AuditSink) -> None:
    for offset, request_id in [(1, "middle"), (2, "newest"), (0, "oldest")]:
        await audit_sink.record(make_record(request_id, time=T0 + timedelta(seconds=offset)))

    assert [record.request_id for record in await audit_sink.query()] == ["newest", "middle", "oldest"]


async def test_records_with_equal_times_come_latest_recorded_first(audit_sink: AuditSink) -> None:
    for request_id in ["a", "b", "c"]:
        await audit_sink.record(make_record(request_id))

    assert [record.request_id for record in await audit_sink.query()] == ["c", "b", "a"]


async def test_query_filters_by_workflow_and_by_principal(audit_sink: AuditSink) -> None:
    await audit_sink.record(make_record("r1", workflow="report", principal_id="key:alice"))
    await audit_sink.record(make_record("r2", workflow="export", principal_id="key:alice"))
    await audit_sink.record(make_record("r3", workflow="report", principal_id="key:bob"))

    by_workflow = await audit_sink.query(workflow="report")
    by_principal = await audit_sink.query(principal_id="key:alice")
    by_both = await audit_sink.query(workflow="report", principal_id="key:bob")

    assert [record.request_id for record in by_workflow] == ["r3", "r1"]
    assert [record.request_id for record in by_principal] == ["r2", "r1"]
    assert [record.request_id for record in by_both] == ["r3"]


async def test_a_tenant_filter_returns_that_tenants_records_only_never_the_platforms(
    audit_sink: AuditSink,
) -> None:
    await audit_sink.record(make_record("platform", tenant_id=None))
    await audit_sink.record(make_record("acme-1", tenant_id="acme"))
    await audit_sink.record(make_record("globex", tenant_id="globex"))
    await audit_sink.record(make_record("acme-2", tenant_id="acme", workflow="export"))

    acme = await audit_sink.query(tenant_id="acme")
    acme_reports = await audit_sink.query(tenant_id="acme", workflow="report")
    everyone = await audit_sink.query()

    assert [record.request_id for record in acme] == ["acme-2", "acme-1"]
    assert {record.tenant_id for record in acme} == {"acme"}
    assert [record.request_id for record in acme_reports] == ["acme-1"]
    assert list(await audit_sink.query(tenant_id="initech")) == []
    assert [record.tenant_id for record in everyone] == ["acme", "globex", "acme", None]


async def test_a_tenants_newest_records_come_first_within_the_limit(audit_sink: AuditSink) -> None:
    for second in range(6):
        tenant_id = "acme" if second % 2 else "globex"
        await audit_sink.record(
            make_record(f"r{second}", time=T0 + timedelta(seconds=second), tenant_id=tenant_id)
        )

    newest = await audit_sink.query(tenant_id="acme", limit=2)

    assert [record.request_id for record in newest] == ["r5", "r3"]


async def test_query_limit_keeps_the_newest_records(audit_sink: AuditSink) -> None:
    for second in range(5):
        await audit_sink.record(make_record(f"r{second}", time=T0 + timedelta(seconds=second)))

    assert [record.request_id for record in await audit_sink.query(limit=2)] == ["r4", "r3"]
    assert list(await audit_sink.query(limit=0)) == []


async def test_a_negative_limit_is_rejected(audit_sink: AuditSink) -> None:
    with pytest.raises(ValueError, match="limit"):
        await audit_sink.query(limit=-1)


async def test_times_with_another_offset_come_back_as_the_same_instant_in_utc(audit_sink: AuditSink) -> None:
    await audit_sink.record(
        make_record(time=datetime(2025, 3, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5))))
    )

    (found,) = await audit_sink.query()

    assert found.time == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert found.time.tzinfo == UTC


@pytest.mark.parametrize(
    "when",
    [
        datetime(2025, 3, 1, 12, 0, tzinfo=UTC),  # no microseconds: still written with six digits
        datetime(2025, 3, 1, 7, 0, 0, 250000, tzinfo=timezone(timedelta(hours=-5))),
        datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # a year padded to four digits
    ],
)
async def test_the_sqlite_appender_stores_a_time_as_sqlalchemy_writes_it(
    tmp_path: Path, when: datetime
) -> None:
    """The appender formats the time itself (off SQLAlchemy's bind processors): the stored text
    must be what SQLAlchemy writes, so ordering and every reader see one format."""
    state = await open_state(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        await state.audit.record(make_record(time=when))
        async with state.engine.connect() as connection:
            stored = (await connection.execute(text("SELECT time FROM audit_records"))).scalar_one()
        dialect = state.engine.sync_engine.dialect
        written = audit_records.c.time.type.dialect_impl(dialect).bind_processor(dialect)
        assert written is not None
        assert stored == written(when)
        (found,) = await state.audit.query()
        assert found.time == when
    finally:
        await state.close()


async def test_a_naive_time_is_rejected_without_recording_anything(audit_sink: AuditSink) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await audit_sink.record(make_record(time=datetime(2025, 3, 1, 12, 0)))

    assert list(await audit_sink.query()) == []


async def test_record_after_close_raises_dependency_unavailable(audit_sink: AuditSink) -> None:
    await audit_sink.record(make_record("before"))
    await audit_sink.close()

    with pytest.raises(DependencyUnavailableError):
        await audit_sink.record(make_record("after"))


async def test_close_commits_records_that_are_still_queued(state_url: str) -> None:
    state = await open_state(state_url)
    calls = [asyncio.create_task(state.audit.record(make_record(f"r{n}"))) for n in range(50)]
    await asyncio.sleep(0)  # one loop turn: every call has queued its record, none is committed yet

    await state.close()

    assert all(call.done() and call.exception() is None for call in calls)
    reopened = await open_state(state_url)
    try:
        assert len(await reopened.audit.query(limit=100)) == 50
    finally:
        await reopened.close()


async def test_a_recorded_entry_survives_closing_and_reopening(state_url: str) -> None:
    state = await open_state(state_url)
    await state.audit.record(make_record("durable"))
    await state.close()

    reopened = await open_state(state_url)
    try:
        found = await reopened.audit.query()
    finally:
        await reopened.close()

    assert [record.request_id for record in found] == ["durable"]


async def test_concurrent_records_share_transactions(sql_state: SqlState) -> None:
    records = [make_record(f"r{n}", time=T0 + timedelta(milliseconds=n)) for n in range(200)]

    await asyncio.gather(*(sql_state.audit.record(record) for record in records))

    stats = sql_state.audit.stats
    assert stats.records_committed == 200
    assert 1 <= stats.batches_committed < 200
    assert list(await sql_state.audit.query(limit=500)) == records[::-1]


async def test_batches_never_exceed_the_configured_size(state_url: str) -> None:
    state = await open_state(state_url, audit_max_batch=16)
    try:
        await asyncio.gather(*(state.audit.record(make_record(f"r{n}")) for n in range(100)))
        stats = state.audit.stats
    finally:
        await state.close()

    assert stats.records_committed == 100
    assert stats.batches_committed >= 100 // 16 + 1


async def test_a_failed_commit_fails_every_waiting_call_and_later_batches_still_commit(
    sql_state: SqlState,
) -> None:
    async with sql_state.engine.begin() as connection:
        await connection.execute(text("DROP TABLE audit_records"))

    results = await asyncio.gather(
        *(sql_state.audit.record(make_record(f"lost{n}")) for n in range(10)), return_exceptions=True
    )

    assert all(isinstance(result, DependencyUnavailableError) for result in results)
    assert sql_state.audit.stats.batches_failed >= 1
    async with sql_state.engine.begin() as connection:
        await connection.run_sync(audit_records.create)
    await sql_state.audit.record(make_record("kept"))
    assert [record.request_id for record in await sql_state.audit.query()] == ["kept"]


async def test_the_failure_message_names_no_database_detail(sql_state: SqlState) -> None:
    async with sql_state.engine.begin() as connection:
        await connection.execute(text("DROP TABLE audit_records"))

    with pytest.raises(DependencyUnavailableError) as caught:
        await sql_state.audit.record(make_record())

    assert "audit_records" not in caught.value.message
    assert caught.value.__cause__ is not None


@pytest.mark.postgres
async def test_records_commit_after_the_server_drops_every_connection(postgres_url: str) -> None:
    state = await open_state(postgres_url)
    try:
        await state.audit.record(make_record("before"))
        async with state.engine.connect() as connection:
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )

        await state.audit.record(make_record("after"))

        assert [record.request_id for record in await state.audit.query()] == ["after", "before"]
    finally:
        await state.close()


async def test_a_batch_larger_than_one_insert_statement_commits_every_record(state_url: str) -> None:
    state = await open_state(state_url, audit_max_batch=3000)
    try:
        await asyncio.gather(*(state.audit.record(make_record(f"big{n}")) for n in range(2100)))
        stats = state.audit.stats
        stored = await state.audit.query(limit=5000)
    finally:
        await state.close()

    assert stats.records_committed == 2100
    assert len({record.request_id for record in stored}) == 2100


async def test_a_record_the_database_cannot_take_fails_alone_and_the_writer_goes_on(state_url: str) -> None:
    state = await open_state(state_url)
    try:
        # A lone surrogate cannot be encoded as UTF-8: that batch fails, the next one commits.
        with pytest.raises(DependencyUnavailableError):
            await state.audit.record(make_record("bad\udc80id"))
        await state.audit.record(make_record("good"))
        stored = [record.request_id for record in await state.audit.query()]
    finally:
        await state.close()
    assert stored == ["good"]


async def test_a_dead_sqlite_appender_is_replaced_and_no_caller_waits_forever(tmp_path: Path) -> None:
    state = await open_state(f"sqlite:///{tmp_path / 'appender.db'}")
    try:
        await state.audit.record(make_record("before"))
        appender = state.audit._lane
        assert appender is not None
        assert appender._process is not None
        appender._process.kill()
        await appender._process.wait()
        # Whatever was in flight fails fast; the next record starts a new appender and commits.
        with contextlib.suppress(DependencyUnavailableError):
            await asyncio.wait_for(state.audit.record(make_record("lost-or-kept")), timeout=10)
        await asyncio.wait_for(state.audit.record(make_record("after")), timeout=10)
        stored = {record.request_id for record in await state.audit.query()}
    finally:
        await state.close()
    assert {"before", "after"} <= stored


# -- the hash chain and retention: every backend -------------------------------------------------


async def test_an_untouched_trail_verifies_intact_and_counts_every_record(audit_sink: AuditSink) -> None:
    for n in range(5):
        await audit_sink.record(make_record(f"r{n}", time=T0 + timedelta(seconds=n)))

    result = await audit_sink.verify()

    assert result.intact, result.reason
    assert (result.checked, result.first_seq, result.last_seq, result.unchained) == (5, 1, 5, 0)
    assert len(result.head_hash) == 64


async def test_an_empty_trail_verifies_intact(audit_sink: AuditSink) -> None:
    result = await audit_sink.verify()

    assert (result.intact, result.checked, result.first_seq, result.last_seq) == (True, 0, 1, 0)


async def test_purge_deletes_only_records_older_than_the_cutoff_and_the_rest_still_verify(
    audit_sink: AuditSink,
) -> None:
    for n in range(6):
        await audit_sink.record(make_record(f"r{n}", time=T0 + timedelta(days=n)))

    removed = await audit_sink.purge(T0 + timedelta(days=3))
    result = await audit_sink.verify()

    assert removed == 3
    assert [record.request_id for record in await audit_sink.query()] == ["r5", "r4", "r3"]
    assert result.intact, result.reason
    assert (result.checked, result.first_seq, result.last_seq) == (3, 4, 6)


async def test_records_after_a_purge_of_everything_continue_the_chain(audit_sink: AuditSink) -> None:
    for n in range(3):
        await audit_sink.record(make_record(f"old{n}", time=T0))
    assert await audit_sink.purge(T0 + timedelta(seconds=1)) == 3
    emptied = await audit_sink.verify()

    await audit_sink.record(make_record("new", time=T0 + timedelta(days=1)))
    result = await audit_sink.verify()

    assert (emptied.intact, emptied.checked, emptied.first_seq, emptied.last_seq) == (True, 0, 4, 3)
    assert result.intact, result.reason
    assert (result.checked, result.first_seq, result.last_seq) == (1, 4, 4)


async def test_a_purge_never_deletes_a_younger_record_nor_one_stored_after_it(audit_sink: AuditSink) -> None:
    # A node whose clock ran ahead stamped "ahead" later than the records stored after it.
    await audit_sink.record(make_record("old", time=T0))
    await audit_sink.record(make_record("ahead", time=T0 + timedelta(days=10)))
    await audit_sink.record(make_record("old-after-it", time=T0 + timedelta(days=1)))

    removed = await audit_sink.purge(T0 + timedelta(days=5))
    kept = {record.request_id for record in await audit_sink.query()}
    later = await audit_sink.purge(T0 + timedelta(days=11))

    assert removed == 1
    assert kept == {"ahead", "old-after-it"}
    assert later == 2
    assert (await audit_sink.verify()).intact


async def test_a_purge_with_nothing_expired_deletes_nothing(audit_sink: AuditSink) -> None:
    await audit_sink.record(make_record("young", time=T0))

    assert await audit_sink.purge(T0) == 0
    assert [record.request_id for record in await audit_sink.query()] == ["young"]


async def test_a_naive_purge_cutoff_is_rejected(audit_sink: AuditSink) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await audit_sink.purge(datetime(2025, 3, 1, 12, 0))
