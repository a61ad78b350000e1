"""The pipeline: fixed stage order, one audit record and one metric per call, every outcome class.

Memory backends and a fake clock; the authorizer, limiter and meter are stand-ins of their seams
that count what reaches them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from nexus.backends.counters import MemoryCounterStore
from nexus.backends.memory import MemoryAuditSink, MemoryKeyStore
from nexus.core.audit import Auditor
from nexus.core.authorization import ALLOW_ALL
from nexus.core.catalog import Catalog
from nexus.core.identity import ApiKeyAuthenticator, new_api_key
from nexus.core.pipeline import ALL_WORKFLOWS, UNKNOWN_WORKFLOW, Pipeline
from nexus.core.ratelimit import Limiter, NoLimit, RateLimiter
from nexus.core.types import (
    Action,
    AuditRecord,
    Channel,
    Credential,
    Decision,
    Invocation,
    Outcome,
    WorkflowInfo,
)
from nexus.errors import (
    AuthenticationError,
    DependencyUnavailableError,
    ForbiddenError,
    InternalError,
    InvalidInputError,
    RateLimitedError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from nexus.testing.clock import FakeClock
from nexus.workflow import AsyncLocalRuntime, WorkflowBuilder

NODE_SECONDS = 0.25


class ScriptedAuthorizer:
    """Answers from a table keyed by workflow name ("*" for the collection); counts each decision."""

    def __init__(self) -> None:
        self.decisions: dict[str, Decision] = {}
        self.calls: list[tuple[str, str, str]] = []

    def decide(self, invocation: Invocation, workflow: WorkflowInfo | None) -> Decision:
        name = ALL_WORKFLOWS if workflow is None else workflow.name
        self.calls.append((invocation.principal.id, invocation.action, name))
        return self.decisions.get(name, ALLOW_ALL)


class CountingLimiter:
    """Counts checks, then defers to a real limiter (or raises `failure` when one is set)."""

    def __init__(self, inner: Limiter) -> None:
        self.inner = inner
        self.calls = 0
        self.failure: Exception | None = None

    async def check(self, invocation: Invocation) -> None:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        await self.inner.check(invocation)


@dataclass
class RecordingMeter:
    calls: list[tuple[Channel, str, Outcome, float]] = field(default_factory=list)
    workflows: list[tuple[str, float]] = field(default_factory=list)

    def observe_call(self, channel: Channel, workflow: str, outcome: Outcome, duration_s: float) -> None:
        self.calls.append((channel, workflow, outcome, duration_s))

    def observe_workflow(self, workflow: str, duration_s: float) -> None:
        self.workflows.append((workflow, duration_s))

    def observe_tenant_usage(self, tenant_id: str, resource: str, value: float) -> None:
        raise AssertionError("the pipeline reports no tenant usage yet")

    def forget_tenant(self, tenant_id: str) -> None:
        raise AssertionError("the pipeline forgets no tenant yet")


@dataclass
class Rig:
    pipeline: Pipeline
    sink: MemoryAuditSink
    meter: RecordingMeter
    authorizer: ScriptedAuthorizer
    limiter: CountingLimiter
    clock: FakeClock
    runs: list[str]
    token: str
    principal_id: str

    def invocation(
        self, workflow: str = "add", inputs: dict[str, Any] | None = None, *, token: str | None = ""
    ) -> Invocation:
        secret = self.token if token == "" else token
        return Invocation(
            request_id=f"req-{len(self.meter.calls)}",
            channel=Channel.API,
            workflow=workflow,
            inputs={"a": 2, "b": 40} if inputs is None else inputs,
            credential=None if secret is None else Credential("bearer", secret),
            client_addr="10.0.0.7",
        )

    async def records(self) -> Sequence[AuditRecord]:
        return await self.sink.query(limit=1000)

    async def only_record(self) -> AuditRecord:
        records = await self.records()
        assert len(records) == 1, records
        return records[0]


async def make_rig(*, rate_limit: int | None = None) -> Rig:
    clock = FakeClock()
    runs: list[str] = []

    def add(a: int, b: int) -> int:
        runs.append("add")
        clock.advance(NODE_SECONDS)
        return a + b

    def explode() -> None:
        runs.append("explode")
        raise ValueError("kaput")

    catalog = Catalog()
    builder = WorkflowBuilder()
    builder.add_input("a", int)
    builder.add_input("b", int)
    builder.add_node("PythonCodeNode", "add", {"function": add, "pure": True})
    catalog.register("add", builder.build(), description="Add two integers")
    failing = WorkflowBuilder().add_node("PythonCodeNode", "explode", {"function": explode, "pure": True})
    catalog.register("explode", failing.build())
    catalog.register(
        "secret", WorkflowBuilder().add_node("PythonCodeNode", "n", {"code": "result = 1"}).build()
    )

    keys = MemoryKeyStore()
    issued = new_api_key("tester", ["analyst"], clock)
    await keys.add(issued.key)
    sink = MemoryAuditSink()
    meter = RecordingMeter()
    authorizer = ScriptedAuthorizer()
    inner: Limiter = NoLimit() if rate_limit is None else RateLimiter(MemoryCounterStore(), rate_limit)
    limiter = CountingLimiter(inner)
    pipeline = Pipeline(
        catalog=catalog,
        authenticator=ApiKeyAuthenticator(keys, clock, cache_ttl_s=0),
        authorizer=authorizer,
        limiter=limiter,
        auditor=Auditor(sink, clock),
        meter=meter,
        clock=clock,
        runtime=AsyncLocalRuntime(),
    )
    return Rig(
        pipeline, sink, meter, authorizer, limiter, clock, runs, issued.plaintext, f"key:{issued.key.key_id}"
    )


@pytest.fixture
async def rig() -> Rig:
    return await make_rig()


# -- order -------------------------------------------------------------------------------------------


async def test_unauthenticated_call_is_refused_before_authorization_and_execution_but_counted(
    rig: Rig,
) -> None:
    with pytest.raises(AuthenticationError):
        await rig.pipeline.execute(rig.invocation(token=None))
    assert rig.authorizer.calls == []
    # Failed attempts count against the client address, so guessing keys is throttled too.
    assert rig.limiter.calls == 1
    assert rig.runs == []


async def test_wrong_key_is_refused_before_authorization_and_execution_but_counted(rig: Rig) -> None:
    with pytest.raises(AuthenticationError):
        await rig.pipeline.execute(rig.invocation(token="nxk_000000000000_not-the-secret"))
    assert (rig.authorizer.calls, rig.limiter.calls, rig.runs) == ([], 1, [])


async def test_forbidden_call_is_neither_rate_limited_nor_executed(rig: Rig) -> None:
    rig.authorizer.decisions["add"] = Decision(allowed=False, reason="analysts may not add")
    with pytest.raises(ForbiddenError):
        await rig.pipeline.execute(rig.invocation())
    assert rig.authorizer.calls == [(rig.principal_id, Action.EXECUTE, "add")]
    assert (rig.limiter.calls, rig.runs) == (0, [])


async def test_allowed_call_passes_each_stage_once_as_the_authenticated_principal(rig: Rig) -> None:
    await rig.pipeline.execute(rig.invocation())
    assert rig.authorizer.calls == [(rig.principal_id, Action.EXECUTE, "add")]
    assert (rig.limiter.calls, rig.runs) == (1, ["add"])


# -- one audit record and one metric per outcome ---------------------------------------------------


async def test_successful_call_returns_outputs_and_is_audited_and_counted_once(rig: Rig) -> None:
    invocation = rig.invocation()
    result = await rig.pipeline.execute(invocation)

    assert result.workflow == "add"
    assert result.outputs == {"add": {"result": 42}}
    assert result.duration_ms == NODE_SECONDS * 1000
    record = await rig.only_record()
    assert record.outcome is Outcome.SUCCESS
    assert record.error_code is None
    assert record.principal_id == rig.principal_id
    assert (record.request_id, record.channel, record.workflow) == (invocation.request_id, Channel.API, "add")
    assert (record.action, record.client_addr) == (Action.EXECUTE, "10.0.0.7")
    assert record.duration_ms == NODE_SECONDS * 1000
    assert record.time == rig.clock.now()
    assert rig.meter.calls == [(Channel.API, "add", Outcome.SUCCESS, NODE_SECONDS)]
    assert rig.meter.workflows == [("add", NODE_SECONDS)]


async def test_invalid_input_is_audited_and_counted_as_invalid_input_without_running_a_node(rig: Rig) -> None:
    with pytest.raises(InvalidInputError):
        await rig.pipeline.execute(rig.invocation(inputs={"a": "two", "b": 40}))
    record = await rig.only_record()
    assert (record.outcome, record.error_code) == (Outcome.INVALID_INPUT, "invalid_input")
    assert record.principal_id == rig.principal_id
    assert [call[1:3] for call in rig.meter.calls] == [("add", Outcome.INVALID_INPUT)]
    assert rig.runs == []


async def test_unknown_workflow_is_audited_as_not_found_and_metered_as_unknown(rig: Rig) -> None:
    with pytest.raises(WorkflowNotFoundError):
        await rig.pipeline.execute(rig.invocation("no-such-flow"))
    record = await rig.only_record()
    assert (record.outcome, record.error_code) == (Outcome.NOT_FOUND, "workflow_not_found")
    assert (record.workflow, record.principal_id) == ("no-such-flow", rig.principal_id)
    assert [call[1:3] for call in rig.meter.calls] == [(UNKNOWN_WORKFLOW, Outcome.NOT_FOUND)]


async def test_many_unknown_names_share_one_metric_label(rig: Rig) -> None:
    for name in ("x1", "x2", "y" * 500):
        with pytest.raises(WorkflowNotFoundError):
            await rig.pipeline.execute(rig.invocation(name))
    assert {call[1] for call in rig.meter.calls} == {UNKNOWN_WORKFLOW}


async def test_unauthenticated_call_is_audited_as_anonymous_and_counted(rig: Rig) -> None:
    with pytest.raises(AuthenticationError):
        await rig.pipeline.execute(rig.invocation(token=None))
    record = await rig.only_record()
    assert (record.outcome, record.error_code) == (Outcome.UNAUTHENTICATED, "not_authenticated")
    assert record.principal_id == "anonymous"
    assert [call[1:3] for call in rig.meter.calls] == [(UNKNOWN_WORKFLOW, Outcome.UNAUTHENTICATED)]


async def test_denied_call_is_audited_as_forbidden_with_the_decision_reason(rig: Rig) -> None:
    rig.authorizer.decisions["add"] = Decision(allowed=False, reason="analysts may not add")
    with pytest.raises(ForbiddenError):
        await rig.pipeline.execute(rig.invocation())
    record = await rig.only_record()
    assert (record.outcome, record.error_code) == (Outcome.FORBIDDEN, "forbidden")
    assert (record.principal_id, record.reason) == (rig.principal_id, "analysts may not add")
    assert [call[1:3] for call in rig.meter.calls] == [("add", Outcome.FORBIDDEN)]


async def test_hidden_workflow_answers_exactly_like_an_unregistered_one(rig: Rig) -> None:
    rig.authorizer.decisions["secret"] = Decision(allowed=False, reason="hidden from analysts", visible=False)
    with pytest.raises(WorkflowNotFoundError) as hidden:
        await rig.pipeline.execute(rig.invocation("secret", {}))
    with pytest.raises(WorkflowNotFoundError) as unregistered:
        Catalog().get("secret")
    assert hidden.value.to_problem() == unregistered.value.to_problem()
    record = await rig.only_record()
    assert (record.outcome, record.error_code) == (Outcome.NOT_FOUND, "workflow_not_found")
    assert record.reason == "hidden from analysts"
    assert rig.limiter.calls == 0


async def test_call_over_the_rate_limit_is_audited_as_rate_limited_and_not_executed() -> None:
    rig = await make_rig(rate_limit=1)
    await rig.pipeline.execute(rig.invocation())
    with pytest.raises(RateLimitedError) as refused:
        await rig.pipeline.execute(rig.invocation())
    assert refused.value.retry_after >= 1
    newest = (await rig.records())[0]
    assert (newest.outcome, newest.error_code) == (Outcome.RATE_LIMITED, "rate_limited")
    assert newest.principal_id == rig.principal_id
    assert [call[2] for call in rig.meter.calls] == [Outcome.SUCCESS, Outcome.RATE_LIMITED]
    assert rig.runs == ["add"]


async def test_failing_node_is_audited_as_failed_and_names_the_node(rig: Rig) -> None:
    with pytest.raises(WorkflowFailedError) as failed:
        await rig.pipeline.execute(rig.invocation("explode", {}))
    assert failed.value.node_id == "explode"
    record = await rig.only_record()
    assert (record.outcome, record.error_code) == (Outcome.FAILED, "workflow_failed")
    assert [call[1:3] for call in rig.meter.calls] == [("explode", Outcome.FAILED)]
    assert [name for name, _ in rig.meter.workflows] == ["explode"]


async def test_unexpected_exception_becomes_internal_error_showing_only_the_request_id(rig: Rig) -> None:
    original = RuntimeError("connection string postgres://admin:hunter2@db")
    rig.limiter.failure = original
    invocation = rig.invocation()
    with pytest.raises(InternalError) as raised:
        await rig.pipeline.execute(invocation)
    error = raised.value
    assert error.message == f"Unexpected error; request id {invocation.request_id}."
    assert "hunter2" not in str(error.to_problem())
    assert error.__cause__ is original
    record = await rig.only_record()
    assert (record.outcome, record.error_code) == (Outcome.ERROR, "internal_error")
    assert [call[1:3] for call in rig.meter.calls] == [("add", Outcome.ERROR)]
    assert rig.runs == []


async def test_execute_audits_the_execute_action_whatever_the_channel_put_in(rig: Rig) -> None:

    await rig.pipeline.execute(replace(rig.invocation(), action=Action.READ))
    assert (await rig.only_record()).action is Action.EXECUTE


async def test_describe_returns_workflow_info_and_is_audited_as_a_read(rig: Rig) -> None:
    info = await rig.pipeline.describe(rig.invocation())
    assert (info.name, info.description) == ("add", "Add two integers")
    assert set(info.input_schema["properties"]) == {"a", "b"}
    record = await rig.only_record()
    assert (record.action, record.outcome) == (Action.READ, Outcome.SUCCESS)
    assert rig.runs == []


# -- refuse ----------------------------------------------------------------------------------------


async def test_refuse_audits_and_returns_the_channel_error_when_admission_passes(rig: Rig) -> None:
    error = InvalidInputError("The body is not JSON.")
    returned = await rig.pipeline.refuse(rig.invocation(), error)
    assert returned is error
    record = await rig.only_record()
    assert (record.outcome, record.error_code) == (Outcome.INVALID_INPUT, "invalid_input")
    assert record.principal_id == rig.principal_id
    assert [call[2] for call in rig.meter.calls] == [Outcome.INVALID_INPUT]
    assert rig.runs == []


async def test_refuse_returns_the_authentication_error_before_the_parse_error(rig: Rig) -> None:
    returned = await rig.pipeline.refuse(
        rig.invocation(token=None), InvalidInputError("The body is not JSON.")
    )
    assert isinstance(returned, AuthenticationError)
    assert returned.http_status == 401
    record = await rig.only_record()
    assert (record.outcome, record.principal_id) == (Outcome.UNAUTHENTICATED, "anonymous")


async def test_refuse_returns_not_found_for_an_unknown_workflow_before_the_parse_error(rig: Rig) -> None:
    returned = await rig.pipeline.refuse(rig.invocation("nope"), InvalidInputError("The body is not JSON."))
    assert isinstance(returned, WorkflowNotFoundError)
    assert (await rig.only_record()).outcome is Outcome.NOT_FOUND


async def test_refuse_counts_against_the_rate_limit_and_reports_it_first() -> None:
    rig = await make_rig(rate_limit=1)
    first = await rig.pipeline.refuse(rig.invocation(), InvalidInputError("bad"))
    second = await rig.pipeline.refuse(rig.invocation(), InvalidInputError("bad"))
    assert isinstance(first, InvalidInputError)
    assert isinstance(second, RateLimitedError)


# -- listing ---------------------------------------------------------------------------------------


async def test_list_workflows_shows_only_what_the_authorizer_lets_the_caller_see_and_use(rig: Rig) -> None:
    rig.authorizer.decisions["secret"] = Decision(allowed=False, reason="hidden", visible=False)
    rig.authorizer.decisions["explode"] = Decision(allowed=False, reason="not for analysts")
    listing = await rig.pipeline.list_workflows(rig.invocation())
    assert [info.name for info in listing] == ["add"]
    assert all(action is Action.READ for _, action, _ in rig.authorizer.calls)
    record = await rig.only_record()
    assert (record.workflow, record.action, record.outcome) == (ALL_WORKFLOWS, Action.READ, Outcome.SUCCESS)
    assert [call[1] for call in rig.meter.calls] == [ALL_WORKFLOWS]


async def test_list_workflows_without_a_policy_lists_every_workflow_sorted(rig: Rig) -> None:
    listing = await rig.pipeline.list_workflows(rig.invocation())
    assert [info.name for info in listing] == ["add", "explode", "secret"]


async def test_list_workflows_is_refused_when_the_collection_is_forbidden(rig: Rig) -> None:
    rig.authorizer.decisions[ALL_WORKFLOWS] = Decision(allowed=False, reason="no listing for analysts")
    with pytest.raises(ForbiddenError):
        await rig.pipeline.list_workflows(rig.invocation())
    assert (await rig.only_record()).reason == "no listing for analysts"


# -- authenticate ----------------------------------------------------------------------------------


async def test_authenticate_returns_the_invocation_with_its_principal_and_audits_nothing(rig: Rig) -> None:
    identified = await rig.pipeline.authenticate(rig.invocation())
    assert identified.principal.id == rig.principal_id
    assert identified.principal.roles == frozenset({"analyst"})
    assert await rig.records() == []


async def test_authenticate_audits_and_counts_a_failure(rig: Rig) -> None:
    with pytest.raises(AuthenticationError):
        await rig.pipeline.authenticate(rig.invocation(token="garbage"))
    record = await rig.only_record()
    assert (record.outcome, record.error_code) == (Outcome.UNAUTHENTICATED, "not_authenticated")
    assert record.reason == "The credential is not a valid API key."
    assert [call[2] for call in rig.meter.calls] == [Outcome.UNAUTHENTICATED]


# -- audit fails closed ----------------------------------------------------------------------------


async def test_call_fails_when_its_audit_record_cannot_be_written(rig: Rig) -> None:
    await rig.sink.close()  # a closed sink raises DependencyUnavailableError on every record
    with pytest.raises(DependencyUnavailableError):
        await rig.pipeline.execute(rig.invocation())


async def test_listing_fails_when_its_audit_record_cannot_be_written(rig: Rig) -> None:
    await rig.sink.close()
    with pytest.raises(DependencyUnavailableError):
        await rig.pipeline.list_workflows(rig.invocation())


async def test_outputs_no_channel_can_encode_fail_the_run_naming_the_node() -> None:
    rig = await make_rig()
    odd = WorkflowBuilder().add_node("PythonCodeNode", "odd", {"code": "result = object()"}).build()
    rig.pipeline.catalog.register("odd", odd)
    with pytest.raises(WorkflowFailedError) as failure:
        await rig.pipeline.execute(replace(rig.invocation(), workflow="odd"))
    assert failure.value.node_id == "odd"
    (record,) = await rig.sink.query(workflow="odd")
    assert (record.outcome, record.error_code) == (Outcome.FAILED, "workflow_failed")


async def test_an_audit_sink_that_breaks_unexpectedly_fails_the_call_closed() -> None:
    rig = await make_rig()

    class BrokenSink(MemoryAuditSink):
        async def record(self, record: AuditRecord) -> None:
            raise RuntimeError("disk on fire")

    rig.pipeline._auditor = Auditor(BrokenSink(), rig.clock)
    with pytest.raises(DependencyUnavailableError):
        await rig.pipeline.execute(rig.invocation())
