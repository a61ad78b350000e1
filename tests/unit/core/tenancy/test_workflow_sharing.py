"""Workflow sharing: which routes a registration serves given a tenant's shares, what the policy lets
through, what the pipeline serves and lists, and what the tenancy runtime refuses when sharing.

Memory backends and a fake clock throughout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from nexus.assembly import TenancyRuntime
from nexus.backends.counters import MemoryCounterStore
from nexus.backends.lease_gauge import MemoryLeaseGauge
from nexus.backends.memory import MemoryAuditSink, MemoryKeyStore, MemoryTenantStore
from nexus.core.audit import Auditor
from nexus.core.authorization import AllowAll
from nexus.core.catalog import Catalog
from nexus.core.identity import ApiKeyAuthenticator, new_api_key
from nexus.core.pipeline import ALL_WORKFLOWS, Pipeline
from nexus.core.ratelimit import NoLimit
from nexus.core.telemetry import NoopMeter
from nexus.core.tenancy.directory import TenantDirectory
from nexus.core.tenancy.gate import TenantGate
from nexus.core.tenancy.model import Tenant, TenantConfig
from nexus.core.tenancy.quota import TenantQuotas
from nexus.core.tenancy.routing import RoutingRules
from nexus.core.types import Channel, Credential, Invocation, RouteKind, TenantRoute
from nexus.enterprise.tenancy import TenantManager
from nexus.errors import ConfigurationError, TenantNotFoundError, WorkflowNotFoundError
from nexus.testing.clock import FakeClock
from nexus.workflow import AsyncLocalRuntime, Workflow, WorkflowBuilder

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
Sharing = bool | str


def workflow() -> Workflow:
    builder = WorkflowBuilder()
    builder.add_node("PythonCodeNode", "who", {"code": "result = tenant_context['tenant_id']"})
    return builder.build()


def catalog() -> Catalog:
    """`report` registered for acme only, `everyone` for every tenant, `ops` the platform's."""
    entries = Catalog()
    entries.register("report", workflow(), tenant_scoped=True, tenants=["acme"])
    entries.register("everyone", workflow(), tenant_scoped=True)
    entries.register("ops", workflow())
    return entries


# -- Registration.serves ----------------------------------------------------------------------------------


def test_a_registration_for_some_tenants_also_serves_a_tenant_it_was_shared_with() -> None:
    report = catalog().get("report")

    assert report.serves("acme")
    assert not report.serves("globex")
    assert report.serves("globex", frozenset({"report"}))
    assert not report.serves("globex", frozenset({"other", "ops"}))
    assert not report.serves(None, frozenset({"report"}))  # never the platform's route


def test_a_share_never_makes_a_platform_workflow_a_tenants() -> None:
    ops = catalog().get("ops")

    assert ops.serves(None)
    assert not ops.serves("acme", frozenset({"ops"}))


def test_a_registration_for_every_tenant_serves_each_with_or_without_shares() -> None:
    everyone = catalog().get("everyone")

    assert everyone.serves("globex")
    assert everyone.serves("globex", frozenset({"report"}))
    assert not everyone.serves(None)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing", "No workflow named 'missing'"),
        ("ops", "not tenant_scoped"),
        ("everyone", "served to every tenant already"),
    ],
)
def test_only_a_tenant_scoped_workflow_for_some_tenants_is_shareable(name: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        catalog().shareable(name)


def test_a_registration_for_some_tenants_is_shareable() -> None:
    assert catalog().shareable("report").name == "report"


def test_a_tenants_shared_workflows_must_be_workflow_names() -> None:
    with pytest.raises(ConfigurationError, match="workflow names"):
        Tenant("acme", "Acme", TenantConfig(), NOW, shared_workflows=frozenset({"not a name"}))
    with pytest.raises(ConfigurationError, match="frozenset"):
        Tenant("acme", "Acme", TenantConfig(), NOW, shared_workflows={"report"})  # type: ignore[arg-type]  # a set on purpose


# -- the policy ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sharing", "platform_admin", "tenant_admin", "served"),
    [(False, False, False, False), ("admin_only", True, False, True), (True, True, True, True)],
)
async def test_the_policy_says_who_may_share_and_whether_shares_are_served(
    sharing: Sharing, platform_admin: bool, tenant_admin: bool, served: bool
) -> None:
    world = await World.make(sharing)
    await world.directory.set_workflow_shared("globex", "report", True)
    policy = world.gate.policy

    assert policy.may_share_workflow(platform_admin=True) is platform_admin
    assert policy.may_share_workflow(platform_admin=False) is tenant_admin
    globex = world.gate.tenant("globex")
    assert world.gate.shared_with(globex) == (frozenset({"report"}) if served else frozenset())
    assert world.gate.shared_with(None) == frozenset()


# -- the pipeline ----------------------------------------------------------------------------------------


@dataclass
class World:
    runtime: TenancyRuntime
    pipeline: Pipeline
    keys: dict[str, str]

    @property
    def gate(self) -> TenantGate:
        return self.runtime.gate

    @property
    def directory(self) -> TenantDirectory:
        return self.runtime.directory

    @classmethod
    async def make(cls, sharing: Sharing = "admin_only", mcp_tools: int | None = None) -> World:
        """acme and globex; `mcp_tools` limits globex's tools (acme has no limits)."""
        clock = FakeClock(NOW)
        rules = RoutingRules.from_mapping({"mcp": "path"}, base_domain="api.test")
        directory = TenantDirectory(MemoryTenantStore(), rules, clock)
        manager = TenantManager(
            isolation_level="moderate",
            cross_tenant_policies={"workflow_sharing": sharing},
            quota_profiles={"small": {"mcp_tools": mcp_tools}},
        )
        leases = MemoryLeaseGauge(clock)
        quotas = TenantQuotas(manager.quota_book(), MemoryCounterStore(), leases)
        runtime: list[TenancyRuntime] = []

        def contexts(tenant: Tenant) -> Mapping[str, Any]:
            return runtime[0].context(tenant)

        gate = TenantGate(directory, quotas, manager.policy, contexts)
        runtime.append(TenancyRuntime(manager, directory, gate, leases, clock))
        entries = catalog()
        await runtime[0].create(entries, "acme", "Acme", None)
        await runtime[0].create(entries, "globex", "Globex", {"quota_profile": "small"})
        keys = MemoryKeyStore()
        plaintexts = {}
        for tenant_id in ("acme", "globex"):
            issued = new_api_key(f"{tenant_id}-key", [], clock, [tenant_id])
            await keys.add(issued.key)
            plaintexts[tenant_id] = issued.plaintext
        pipeline = Pipeline(
            catalog=entries,
            authenticator=ApiKeyAuthenticator(keys, clock, cache_ttl_s=0),
            authorizer=AllowAll(),
            limiter=NoLimit(),
            auditor=Auditor(MemoryAuditSink(), clock),
            meter=NoopMeter(),
            clock=clock,
            runtime=AsyncLocalRuntime(),
            tenancy=gate,
        )
        return cls(runtime[0], pipeline, plaintexts)

    def call(self, tenant_id: str, workflow: str = "report") -> Invocation:
        return Invocation(
            request_id="req-1",
            channel=Channel.MCP,
            workflow=workflow,
            inputs={},
            credential=Credential("bearer", self.keys[tenant_id]),
            client_addr="127.0.0.1",
            route=TenantRoute(RouteKind.PATH, tenant_id),
        )

    async def listed(self, tenant_id: str) -> list[str]:
        listing = await self.pipeline.list_workflows(self.call(tenant_id, ALL_WORKFLOWS))
        return [info.name for info in listing]

    async def share(self, name: str, tenant_id: str, *, share: bool = True) -> Tenant:
        return await self.runtime.share_workflow(self.pipeline.catalog, name, tenant_id, share=share)


async def test_a_shared_workflow_runs_and_is_listed_on_the_receiving_tenants_route_until_unshared() -> None:
    world = await World.make()
    with pytest.raises(WorkflowNotFoundError):
        await world.pipeline.execute(world.call("globex"))
    assert await world.listed("globex") == ["everyone"]

    shared = await world.share("report", "globex")

    assert shared.shared_workflows == frozenset({"report"})
    result = await world.pipeline.execute(world.call("globex"))
    assert result.outputs == {"who": {"result": "globex"}}  # run in the receiving tenant's context
    assert await world.listed("globex") == ["everyone", "report"]
    assert await world.listed("acme") == ["everyone", "report"]

    unshared = await world.share("report", "globex", share=False)

    assert unshared.shared_workflows == frozenset()
    with pytest.raises(WorkflowNotFoundError):
        await world.pipeline.execute(world.call("globex"))
    assert await world.listed("globex") == ["everyone"]
    assert (await world.pipeline.execute(world.call("acme"))).outputs == {"who": {"result": "acme"}}


async def test_shares_stored_while_sharing_was_on_are_not_served_once_it_is_off() -> None:
    world = await World.make(sharing=False)
    await world.directory.set_workflow_shared("globex", "report", True)  # as an earlier policy allowed

    with pytest.raises(WorkflowNotFoundError):
        await world.pipeline.execute(world.call("globex"))
    assert await world.listed("globex") == ["everyone"]


# -- sharing through the tenancy runtime -------------------------------------------------------------------


async def test_sharing_is_refused_while_workflow_sharing_is_false() -> None:
    world = await World.make(sharing=False)

    with pytest.raises(ConfigurationError, match="workflow_sharing'] is False"):
        await world.share("report", "globex")

    assert (await world.directory.get("globex")).shared_workflows == frozenset()  # type: ignore[union-attr]  # it exists


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing", "No workflow named 'missing'"),
        ("ops", "not tenant_scoped"),
        ("everyone", "served to every tenant already"),
    ],
)
async def test_sharing_a_workflow_that_cannot_be_shared_is_refused_with_the_reason(
    name: str, reason: str
) -> None:
    world = await World.make(sharing=True)

    with pytest.raises(ConfigurationError, match=reason):
        await world.share(name, "globex")

    assert (await world.directory.get("globex")).shared_workflows == frozenset()  # type: ignore[union-attr]  # it exists


async def test_sharing_with_an_unknown_tenant_is_refused_as_not_found() -> None:
    world = await World.make()

    with pytest.raises(TenantNotFoundError):
        await world.share("report", "initech")


async def test_sharing_past_the_receiving_tenants_mcp_tools_is_refused() -> None:
    world = await World.make(mcp_tools=1)  # globex has `everyone` already

    with pytest.raises(ConfigurationError, match="at most 1 MCP tools"):
        await world.share("report", "globex")

    assert (await world.directory.get("globex")).shared_workflows == frozenset()  # type: ignore[union-attr]  # it exists


async def test_sharing_what_a_tenant_is_served_already_changes_nothing() -> None:
    world = await World.make(mcp_tools=2)

    own = await world.share("report", "acme")  # registered for acme
    await world.share("report", "globex")
    again = await world.share("report", "globex")  # a second share needs no second tool

    assert own.shared_workflows == frozenset()
    assert again.shared_workflows == frozenset({"report"})


async def test_a_workflow_served_by_its_registration_cannot_be_unshared() -> None:
    world = await World.make()

    with pytest.raises(ConfigurationError, match="only a share can be taken back"):
        await world.share("report", "acme", share=False)

    assert (await world.pipeline.execute(world.call("acme"))).outputs == {"who": {"result": "acme"}}


async def test_unsharing_what_was_never_shared_leaves_the_tenant_as_it_is() -> None:
    world = await World.make()

    assert (await world.share("report", "globex", share=False)).shared_workflows == frozenset()


async def test_a_stale_share_can_be_taken_back_whatever_the_policy_and_the_registrations() -> None:
    world = await World.make(sharing=False)
    await world.directory.set_workflow_shared("globex", "retired", True)  # no longer registered

    unshared = await world.share("retired", "globex", share=False)

    assert unshared.shared_workflows == frozenset()


async def test_a_share_counts_against_the_receiving_tenants_tools_when_enabling_more() -> None:
    world = await World.make(mcp_tools=2)
    await world.share("report", "globex")  # globex: everyone + report
    world.pipeline.catalog.register("extra", workflow(), tenant_scoped=True)

    with pytest.raises(ConfigurationError, match="Tenant 'globex' may expose at most 2 MCP tools"):
        world.runtime.check_tools(world.pipeline.catalog)
