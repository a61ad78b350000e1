"""The auditor: one record per call, built from the invocation and the clock, never with inputs."""

from __future__ import annotations

from dataclasses import astuple, replace
from datetime import UTC, datetime

import pytest

from nexus.backends.memory import MemoryAuditSink
from nexus.core.audit import Auditor
from nexus.core.types import Action, Channel, Invocation, Outcome, Principal
from nexus.errors import DependencyUnavailableError
from nexus.testing.clock import FakeClock

INVOCATION = Invocation(
    request_id="req-1",
    channel=Channel.CLI,
    workflow="transfer",
    inputs={"account": "DE44-SECRET-IBAN", "password": "hunter2"},
    client_addr="192.0.2.9",
    principal=Principal(id="key:abcdef012345", kind="api_key", roles=frozenset({"ops"})),
    action=Action.EXECUTE,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 6, 1, 12, 0, tzinfo=UTC), 50.0)


@pytest.fixture
def sink() -> MemoryAuditSink:
    return MemoryAuditSink()


async def test_record_carries_who_what_where_how_it_ended_and_when(
    sink: MemoryAuditSink, clock: FakeClock
) -> None:
    clock.advance(3600)
    await Auditor(sink, clock).record(INVOCATION, Outcome.FORBIDDEN, "forbidden", 0.5, "ops may not transfer")
    [record] = await sink.query()
    assert record.time == datetime(2025, 6, 1, 13, 0, tzinfo=UTC)
    assert (record.request_id, record.channel, record.workflow) == ("req-1", Channel.CLI, "transfer")
    assert (record.principal_id, record.action, record.client_addr) == (
        "key:abcdef012345",
        Action.EXECUTE,
        "192.0.2.9",
    )
    assert (record.outcome, record.error_code, record.reason) == (
        Outcome.FORBIDDEN,
        "forbidden",
        "ops may not transfer",
    )
    assert record.duration_ms == 500.0


async def test_record_never_holds_an_input_value(sink: MemoryAuditSink, clock: FakeClock) -> None:
    await Auditor(sink, clock).record(INVOCATION, Outcome.SUCCESS, None, 0.01, "")
    [record] = await sink.query()
    text = repr(astuple(record))
    for value in INVOCATION.inputs.values():
        assert value not in text


@pytest.mark.parametrize(("seconds", "millis"), [(0.0, 0.0), (0.1234567, 123.457), (2.0, 2000.0)])
async def test_duration_is_stored_in_milliseconds_to_three_decimals(
    sink: MemoryAuditSink, clock: FakeClock, seconds: float, millis: float
) -> None:
    await Auditor(sink, clock).record(INVOCATION, Outcome.SUCCESS, None, seconds, "")
    assert (await sink.query())[0].duration_ms == millis


async def test_very_long_workflow_names_are_cut_to_128_characters(
    sink: MemoryAuditSink, clock: FakeClock
) -> None:
    long_name = replace(INVOCATION, workflow="w" * 10_000)
    await Auditor(sink, clock).record(long_name, Outcome.NOT_FOUND, "workflow_not_found", 0.0, "")
    assert (await sink.query())[0].workflow == "w" * 128


async def test_each_call_to_record_writes_exactly_one_record(sink: MemoryAuditSink, clock: FakeClock) -> None:
    auditor = Auditor(sink, clock)
    for index in range(3):
        await auditor.record(replace(INVOCATION, request_id=f"req-{index}"), Outcome.SUCCESS, None, 0.0, "")
        clock.advance(1)
    assert [record.request_id for record in await sink.query()] == ["req-2", "req-1", "req-0"]


async def test_record_raises_when_the_sink_cannot_store_it(sink: MemoryAuditSink, clock: FakeClock) -> None:
    await sink.close()
    with pytest.raises(DependencyUnavailableError):
        await Auditor(sink, clock).record(INVOCATION, Outcome.SUCCESS, None, 0.0, "")


async def test_control_characters_from_callers_never_reach_the_store(
    sink: MemoryAuditSink, clock: FakeClock
) -> None:
    hostile = replace(INVOCATION, workflow="a\x00b\nc", request_id="r\x00\x1b[2J")
    await Auditor(sink, clock).record(hostile, Outcome.NOT_FOUND, "workflow_not_found", 0.0, "x\x00y")
    (record,) = await sink.query()
    for text in (record.workflow, record.request_id, record.reason):
        assert not any(ord(char) < 32 or ord(char) == 127 for char in text), text
    assert record.workflow == "a\ufffdb\ufffdc"


async def test_record_carries_the_tenant_the_pipeline_resolved_or_none_for_the_platform(
    sink: MemoryAuditSink, clock: FakeClock
) -> None:
    auditor = Auditor(sink, clock)
    await auditor.record(INVOCATION, Outcome.SUCCESS, None, 0.0, "")
    await auditor.record(
        replace(INVOCATION, request_id="req-2", tenant_id="acme"), Outcome.SUCCESS, None, 0.0, ""
    )

    platform, acme = sorted(await sink.query(), key=lambda record: record.request_id)

    assert (platform.tenant_id, acme.tenant_id) == (None, "acme")
    assert [record.request_id for record in await sink.query(tenant_id="acme")] == ["req-2"]
