"""TenantAssignmentNode: the call's tenant from the runtime context only; caller-filled sources refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from nexus.core.tenancy.context import TenantContext, TenantPlacement, run_context
from nexus.core.tenancy.model import IsolationLevel, Tenant, TenantConfig
from nexus.errors import WorkflowDefinitionError, WorkflowFailedError
from nexus.workflow import AsyncLocalRuntime, Workflow, WorkflowBuilder, get_node_type

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SPEC_CONFIG = {"tenant_source": "session", "enforce_isolation": True, "audit_access": True}


def acme_context() -> TenantContext:
    tenant = Tenant("acme", "Acme", TenantConfig(compliance_level="hipaa"), NOW)
    return TenantContext(tenant, TenantPlacement(IsolationLevel.MODERATE))


def assignment(config: dict[str, Any] | None = None) -> Workflow:
    return WorkflowBuilder().add_node("TenantAssignmentNode", "assign_tenant", config).build()


def test_the_node_is_built_in_by_name() -> None:
    assert get_node_type("TenantAssignmentNode").__module__ == "nexus.nodes.tenant"


@pytest.mark.parametrize("config", [SPEC_CONFIG, {**SPEC_CONFIG, "tenant_source": "route"}, None])
async def test_outputs_the_calls_tenant_and_notes_the_access(config: dict[str, Any] | None) -> None:
    ctx = acme_context()
    results, _ = await AsyncLocalRuntime().execute(assignment(config), context=run_context(ctx))
    assert results == {"assign_tenant": {"tenant_id": "acme", "config": {"compliance_level": "hipaa"}}}
    assert json.loads(json.dumps(results)) == results
    assert ctx.accesses == ("assign_tenant",)


async def test_a_tenant_named_in_inputs_changes_nothing() -> None:
    ctx = acme_context()
    forged = {"tenant_id": "other", "tenant_context": {"tenant_id": "other"}, "assign_tenant": {"x": 1}}
    results, _ = await AsyncLocalRuntime().execute(assignment(SPEC_CONFIG), forged, context=run_context(ctx))
    assert results["assign_tenant"]["tenant_id"] == "acme"


async def test_feeds_the_nodes_after_it() -> None:
    workflow = (
        WorkflowBuilder()
        .add_node("TenantAssignmentNode", "assign_tenant", SPEC_CONFIG)
        .add_node("PythonCodeNode", "use", {"code": "result = config.get('compliance_level')"})
        .add_connection("assign_tenant", "config", "use", "config")
        .build()
    )
    results, _ = await AsyncLocalRuntime().execute(workflow, context=run_context(acme_context()))
    assert results["use"] == {"result": "hipaa"}


@pytest.mark.parametrize(
    "context", [None, {"tenant_id": "acme"}, {"tenant_context": {"tenant_id": "acme", "config": {}}}]
)
async def test_without_a_tenant_context_the_run_fails_closed(context: dict[str, Any] | None) -> None:
    with pytest.raises(WorkflowFailedError, match="node 'assign_tenant' failed: enforce_isolation") as failed:
        await AsyncLocalRuntime().execute(assignment(SPEC_CONFIG), context=context)
    assert failed.value.node_id == "assign_tenant"


async def test_without_enforcement_a_call_with_no_tenant_gets_none() -> None:
    results, _ = await AsyncLocalRuntime().execute(assignment({**SPEC_CONFIG, "enforce_isolation": False}))
    assert results == {"assign_tenant": {"tenant_id": None, "config": {}}}


async def test_without_audit_the_access_is_not_noted() -> None:
    ctx = acme_context()
    await AsyncLocalRuntime().execute(
        assignment({**SPEC_CONFIG, "audit_access": False}), context=run_context(ctx)
    )
    assert ctx.accesses == ()


@pytest.mark.parametrize(
    "source",
    [
        "input",
        "inputs.tenant_id",
        "header",
        "header:X-Tenant-ID",
        "x_tenant_header",
        "argument",
        "tool_arguments",
        "params.tenant",
        "request body",
    ],
)
def test_a_source_a_caller_or_model_fills_in_is_refused_saying_why(source: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as refused:
        assignment({**SPEC_CONFIG, "tenant_source": source})
    message = refused.value.message
    assert message.startswith("node 'assign_tenant' (TenantAssignmentNode): tenant_source")
    assert "the tenant must never come from what a caller or a model fills in" in message


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"tenant_source": "jwt"}, "unknown tenant_source 'jwt'; use 'session'"),
        ({"tenant_source": 7}, "unknown tenant_source 7"),
        ({"enforce_isolation": "yes"}, "enforce_isolation must be true or false"),
        ({"audit_access": 1}, "audit_access must be true or false"),
        ({"tenant_id": "acme"}, "unknown config key"),
    ],
)
def test_other_invalid_configs_fail_the_build(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=problem):
        assignment(config)
