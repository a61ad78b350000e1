"""A call's tenant as workflows see it: read-only context, placement rules, and the storage gate."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from nexus.core.tenancy.context import (
    MIB,
    StorageGate,
    TenantContext,
    TenantPlacement,
    run_context,
    tenant_context_of,
)
from nexus.core.tenancy.model import IsolationLevel, Tenant, TenantConfig
from nexus.errors import ConfigurationError, DependencyUnavailableError, QuotaExceededError
from nexus.testing.clock import FakeClock
from nexus.workflow import AsyncLocalRuntime, WorkflowBuilder

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
STRICT = TenantPlacement(IsolationLevel.STRICT, schema="acme", role="nexus_tenant_acme")


def acme(**config: Any) -> Tenant:
    return Tenant("acme", "Acme Corp", TenantConfig(**config), NOW)


def context(**config: Any) -> TenantContext:
    return TenantContext(acme(**config), STRICT)


# TenantContext -----------------------------------------------------------------------------------


def test_context_shows_the_tenant_its_set_config_keys_and_its_isolation_level() -> None:
    ctx = context(compliance_level="hipaa", cli_prefix="acme")
    assert dict(ctx) == {
        "tenant_id": "acme",
        "name": "Acme Corp",
        "config": {"cli_prefix": "acme", "compliance_level": "hipaa"},
        "isolation_level": "strict",
    }
    assert len(ctx) == 4
    assert ctx.placement is STRICT
    assert ctx.storage is None
    assert "placement" not in ctx
    assert json.loads(json.dumps(dict(ctx)))["config"]["compliance_level"] == "hipaa"


def test_context_keys_cannot_be_set_or_deleted() -> None:
    ctx = context()
    with pytest.raises(TypeError):
        ctx["tenant_id"] = "other"  # type: ignore[index]  # the point: a Mapping has no __setitem__
    with pytest.raises(TypeError):
        del ctx["tenant_id"]  # type: ignore[attr-defined]  # nor __delitem__
    assert ctx["tenant_id"] == "acme"


@pytest.mark.parametrize("attribute", ["placement", "storage", "_items", "_config", "tenant_id"])
def test_context_attributes_cannot_be_set_or_deleted(attribute: str) -> None:
    ctx = context()
    with pytest.raises(AttributeError, match="read-only"):
        setattr(ctx, attribute, TenantPlacement(IsolationLevel.BASIC))
    with pytest.raises(AttributeError, match="read-only"):
        delattr(ctx, attribute)
    assert ctx.placement is STRICT
    assert ctx["tenant_id"] == "acme"


def test_editing_the_config_a_node_was_given_changes_nothing_in_the_context() -> None:
    ctx = context(compliance_level="hipaa")
    config = ctx["config"]
    config["compliance_level"] = "none"
    config["quota_profile"] = "unlimited"
    assert ctx["config"] == {"compliance_level": "hipaa"}


def test_placement_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        STRICT.role = "nexus_tenant_other"  # type: ignore[misc]  # the point: frozen


def test_note_access_records_each_node_once_in_order() -> None:
    ctx = context()
    for node_id in ("read", "assign", "read"):
        ctx.note_access(node_id)
    assert ctx.accesses == ("read", "assign")
    with pytest.raises(ValueError, match="id of the node"):
        ctx.note_access("")


def test_run_context_is_read_only_and_carries_the_tenant_id() -> None:
    ctx = context()
    run = run_context(ctx)
    assert dict(run) == {"tenant_context": ctx, "tenant_id": "acme"}
    with pytest.raises(TypeError):
        run["tenant_id"] = "other"  # type: ignore[index]  # the point: read-only
    assert tenant_context_of(run) is ctx


def test_a_lookalike_dict_is_no_tenant_context() -> None:
    assert tenant_context_of({"tenant_context": {"tenant_id": "acme"}, "tenant_id": "acme"}) is None
    assert tenant_context_of({}) is None


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"isolation": IsolationLevel.STRICT, "schema": "acme"}, "names the tenant's schema and role"),
        ({"isolation": IsolationLevel.STRICT, "role": "r"}, "names the tenant's schema and role"),
        ({"isolation": IsolationLevel.MODERATE, "schema": "acme"}, "tenants share the schema"),
        ({"isolation": IsolationLevel.BASIC, "database": "acme_db"}, "tenants share the schema"),
        ({"isolation": IsolationLevel.STRICT, "schema": "Acme", "role": "r"}, "lowercase PostgreSQL name"),
        ({"isolation": IsolationLevel.STRICT, "schema": "a;b", "role": "r"}, "lowercase PostgreSQL name"),
        ({"isolation": "strict", "schema": "a", "role": "r"}, "must be an IsolationLevel"),
    ],
)
def test_impossible_placements_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        TenantPlacement(**kwargs)


# PythonCodeNode sees the tenant, and inputs cannot impersonate it -----------------------------------


async def test_code_sees_tenant_context_and_inputs_cannot_override_it() -> None:
    code = (
        "result = [tenant_context['tenant_id'], tenant_id, tenant_context['config'].get('compliance_level')]"
    )
    workflow = WorkflowBuilder().add_node("PythonCodeNode", "process", {"code": code}).build()
    forged = {"tenant_context": {"tenant_id": "evil", "config": {}}, "tenant_id": "evil"}
    results, _ = await AsyncLocalRuntime().execute(
        workflow, forged, context=run_context(context(compliance_level="hipaa"))
    )
    assert results == {"process": {"result": ["acme", "acme", "hipaa"]}}


async def test_a_function_naming_tenant_context_gets_the_calls_tenant_not_an_input() -> None:
    def who(tenant_context: TenantContext) -> str:
        return str(tenant_context["tenant_id"])

    workflow = WorkflowBuilder().add_node("PythonCodeNode", "who", {"function": who}).build()
    results, _ = await AsyncLocalRuntime().execute(
        workflow, {"tenant_context": {"tenant_id": "evil"}}, context=run_context(context())
    )
    assert results == {"who": {"result": "acme"}}


# StorageGate -------------------------------------------------------------------------------------


class Sizes:
    """A measurement that answers the given sizes in turn (the last one repeats), or raises them."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.hold: asyncio.Event | None = None

    async def __call__(self) -> int:
        self.calls += 1
        if self.hold is not None:
            await self.hold.wait()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


async def settle() -> None:
    """Let background measurements run (no time passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_first_write_waits_for_a_measurement_and_passes_under_the_limit(clock: FakeClock) -> None:
    sizes = Sizes(MIB - 1)
    gate = StorageGate("acme", 1, sizes, clock, refresh_s=30)
    assert gate.used_bytes is None
    await gate.check_write()
    assert (sizes.calls, gate.used_bytes, gate.limit_bytes) == (1, MIB - 1, MIB)


async def test_a_write_at_the_limit_is_refused_with_resource_and_retry_hint(clock: FakeClock) -> None:
    gate = StorageGate("acme", 1, Sizes(MIB), clock, refresh_s=30)
    with pytest.raises(QuotaExceededError) as refused:
        await gate.check_write()
    assert refused.value.detail["resource"] == "storage_mb"
    assert refused.value.retry_after == 30
    assert "storage_mb quota of 1" in refused.value.message
    clock.advance(12)
    with pytest.raises(QuotaExceededError) as again:
        await gate.check_write()
    assert again.value.retry_after == 18


async def test_size_is_measured_at_most_once_per_refresh_period(clock: FakeClock) -> None:
    sizes = Sizes(10)
    gate = StorageGate("acme", 1, sizes, clock, refresh_s=30)
    for _ in range(5):
        await gate.check_write()
    clock.advance(29.9)
    await gate.check_write()
    await settle()
    assert sizes.calls == 1
    clock.advance(0.1)
    await gate.check_write()
    await settle()
    assert sizes.calls == 2


async def test_a_stale_size_under_the_limit_lets_the_write_through_and_refreshes_behind_it(
    clock: FakeClock,
) -> None:
    sizes = Sizes(10, 2 * MIB)
    gate = StorageGate("acme", 1, sizes, clock, refresh_s=30)
    await gate.check_write()
    clock.advance(30)
    sizes.hold = asyncio.Event()
    await gate.check_write()  # returns without waiting for the held measurement
    assert gate.used_bytes == 10
    sizes.hold.set()
    await settle()
    assert gate.used_bytes == 2 * MIB
    with pytest.raises(QuotaExceededError):
        await gate.check_write()


async def test_a_stale_size_over_the_limit_is_measured_again_before_refusing(clock: FakeClock) -> None:
    sizes = Sizes(2 * MIB, 10)
    gate = StorageGate("acme", 1, sizes, clock, refresh_s=30)
    with pytest.raises(QuotaExceededError):
        await gate.check_write()
    clock.advance(30)
    await gate.check_write()  # the tenant freed space meanwhile
    assert sizes.calls == 2


async def test_concurrent_writes_share_one_measurement(clock: FakeClock) -> None:
    sizes = Sizes(10)
    sizes.hold = asyncio.Event()
    gate = StorageGate("acme", 1, sizes, clock, refresh_s=30)
    checks = [asyncio.create_task(gate.check_write()) for _ in range(5)]
    await settle()
    sizes.hold.set()
    await asyncio.gather(*checks)
    assert sizes.calls == 1


async def test_never_measured_fails_closed_and_is_retried_only_after_the_refresh_period(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sizes = Sizes(DependencyUnavailableError("The tenant data store is unavailable."), 10)
    gate = StorageGate("acme", 1, sizes, clock, refresh_s=30)
    for _ in range(2):
        with pytest.raises(DependencyUnavailableError, match="cannot be measured; writes are refused"):
            await gate.check_write()
    assert sizes.calls == 1
    assert "could not measure a tenant's storage" in caplog.text
    clock.advance(30)
    await gate.check_write()
    assert sizes.calls == 2


async def test_a_failed_refresh_keeps_the_last_size(clock: FakeClock) -> None:
    sizes = Sizes(10, DependencyUnavailableError("down"), 20)
    gate = StorageGate("acme", 1, sizes, clock, refresh_s=30)
    await gate.check_write()
    clock.advance(30)
    await gate.check_write()
    await settle()
    assert (sizes.calls, gate.used_bytes) == (2, 10)


async def test_close_stops_a_measurement_in_progress(clock: FakeClock) -> None:
    sizes = Sizes(10)
    sizes.hold = asyncio.Event()
    gate = StorageGate("acme", 1, sizes, clock, refresh_s=30)
    waiting = asyncio.create_task(gate.check_write())
    await settle()
    await gate.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert gate.used_bytes is None


@pytest.mark.parametrize(("limit_mb", "refresh_s"), [(0, 30.0), (True, 30.0), (1.5, 30.0), (1, 0.0)])
def test_impossible_gate_settings_are_refused(limit_mb: Any, refresh_s: float, clock: FakeClock) -> None:
    with pytest.raises(ConfigurationError):
        StorageGate("acme", limit_mb, Sizes(0), clock, refresh_s=refresh_s)


async def test_the_context_carries_its_gate() -> None:
    gate = StorageGate("acme", 5, Sizes(0), FakeClock(NOW))
    ctx = TenantContext(acme(), STRICT, storage=gate)
    assert ctx.storage is gate
    assert "storage" not in ctx
