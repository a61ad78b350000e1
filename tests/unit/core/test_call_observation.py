"""The pipeline hands every finished call to its observer once: outcome, code, times, the run of an
execute; a failing observer never fails a call. Memory backends and a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from nexus.backends.memory import MemoryAuditSink, MemoryKeyStore
from nexus.core.audit import Auditor
from nexus.core.authorization import AllowAll
from nexus.core.catalog import Catalog
from nexus.core.identity import ApiKeyAuthenticator, new_api_key
from nexus.core.pipeline import UNKNOWN_WORKFLOW, Pipeline
from nexus.core.ratelimit import NoLimit
from nexus.core.telemetry import NoopMeter
from nexus.core.types import CallRecord, Channel, Credential, Invocation, Outcome
from nexus.errors import AuthenticationError, WorkflowFailedError
from nexus.testing.clock import FakeClock
from nexus.workflow import AsyncLocalRuntime, WorkflowBuilder

QUEUED_S = 0.125  # time the call spends before its run starts (the fake clock moves only when told)
RUN_S = 0.25


@dataclass
class RecordingObserver:
    """Keeps what it is handed (the seam's stand-in); `failure` makes every observe raise."""

    calls: list[CallRecord] = field(default_factory=list)
    failure: Exception | None = None

    def observe(self, call: CallRecord) -> None:
        self.calls.append(call)
        if self.failure is not None:
            raise self.failure

    async def close(self) -> None:
        return None


@dataclass
class Rig:
    pipeline: Pipeline
    observer: RecordingObserver
    sink: MemoryAuditSink
    clock: FakeClock
    token: str

    def invocation(self, workflow: str = "add", token: str | None = None) -> Invocation:
        return Invocation(
            request_id="req-1",
            channel=Channel.MCP,
            workflow=workflow,
            inputs={"a": 2, "b": 40},
            credential=Credential("bearer", token or self.token),
            client_addr="10.0.0.7",
            trace_parent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )


@pytest.fixture
async def rig() -> Rig:
    clock = FakeClock()

    def add(a: int, b: int) -> int:
        clock.advance(RUN_S)
        return a + b

    def explode() -> None:
        clock.advance(RUN_S)
        raise ValueError("kaput")

    catalog = Catalog()
    adding = WorkflowBuilder()
    adding.add_input("a", int)
    adding.add_input("b", int)
    adding.add_node("PythonCodeNode", "add", {"function": add, "pure": True})
    catalog.register("add", adding.build())
    catalog.register(
        "explode",
        WorkflowBuilder().add_node("PythonCodeNode", "x", {"function": explode, "pure": True}).build(),
    )
    keys = MemoryKeyStore()
    issued = new_api_key("tester", [], clock)
    await keys.add(issued.key)
    sink = MemoryAuditSink()
    observer = RecordingObserver()

    class QueueingLimiter:
        async def check(self, invocation: Invocation) -> None:
            clock.advance(QUEUED_S)
            await NoLimit().check(invocation)

    pipeline = Pipeline(
        catalog=catalog,
        authenticator=ApiKeyAuthenticator(keys, clock, cache_ttl_s=0),
        authorizer=AllowAll(),
        limiter=QueueingLimiter(),
        auditor=Auditor(sink, clock),
        meter=NoopMeter(),
        clock=clock,
        runtime=AsyncLocalRuntime(),
        observer=observer,
    )
    return Rig(pipeline, observer, sink, clock, issued.plaintext)


async def test_an_execute_is_observed_once_with_its_run_and_times(rig: Rig) -> None:
    began = rig.clock.now()
    result = await rig.pipeline.execute(rig.invocation())
    [call] = rig.observer.calls
    assert (call.workflow, call.outcome, call.error_code) == ("add", Outcome.SUCCESS, None)
    assert call.invocation.trace_parent == rig.invocation().trace_parent
    assert call.invocation.principal.kind == "api_key"
    assert call.started_at == began
    assert call.duration_s == pytest.approx(QUEUED_S + RUN_S)
    assert call.run is not None
    assert call.run.run_id == result.run_id
    assert (call.run.offset_s, call.run.duration_s) == (pytest.approx(QUEUED_S), pytest.approx(RUN_S))
    assert rig.clock.now() - call.started_at == timedelta(seconds=QUEUED_S + RUN_S)


async def test_a_failed_run_is_observed_with_its_code_and_its_run(rig: Rig) -> None:
    with pytest.raises(WorkflowFailedError):
        await rig.pipeline.execute(rig.invocation("explode"))
    [call] = rig.observer.calls
    assert (call.outcome, call.error_code) == (Outcome.FAILED, "workflow_failed")
    assert call.run is not None
    assert call.run.duration_s == pytest.approx(RUN_S)


async def test_a_refused_call_is_observed_without_a_run(rig: Rig) -> None:
    with pytest.raises(AuthenticationError):
        await rig.pipeline.execute(rig.invocation(token="nxk_000000000000_not-the-secret"))
    [call] = rig.observer.calls
    assert (call.workflow, call.outcome, call.error_code) == (
        UNKNOWN_WORKFLOW,
        Outcome.UNAUTHENTICATED,
        "not_authenticated",
    )
    assert call.run is None


async def test_listings_are_observed_without_a_run(rig: Rig) -> None:
    await rig.pipeline.list_workflows(rig.invocation())
    [call] = rig.observer.calls
    assert (call.workflow, call.outcome, call.run) == ("*", Outcome.SUCCESS, None)


async def test_a_failing_observer_never_fails_the_call_nor_its_audit(rig: Rig) -> None:
    rig.observer.failure = RuntimeError("collector exploded")
    result = await rig.pipeline.execute(rig.invocation())
    assert result.outputs == {"add": {"result": 42}}
    [record] = await rig.sink.query()
    assert record.outcome is Outcome.SUCCESS
