"""The tenant stage of the pipeline: routes name tenants, principals must belong to them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nexus.backends.counters import MemoryCounterStore
from nexus.backends.lease_gauge import MemoryLeaseGauge
from nexus.backends.memory import MemoryTenantStore
from nexus.core.tenancy.directory import TenantDirectory
from nexus.core.tenancy.gate import TenantGate, TenantRefusedError
from nexus.core.tenancy.model import BUILTIN_PROFILES, Tenant, TenantConfig
from nexus.core.tenancy.policy import CrossTenantPolicy
from nexus.core.tenancy.quota import QuotaBook, TenantQuotas
from nexus.core.tenancy.routing import RoutingRules
from nexus.core.types import Principal, RouteKind, TenantRoute
from nexus.errors import ConfigurationError, TenantNotFoundError, TenantSuspendedError
from nexus.testing.clock import FakeClock

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ACME = Tenant("acme", "Acme", TenantConfig(api_subdomain="acme", cli_prefix="acme-cli", mcp_port=3001), NOW)
GLOBEX = Tenant("globex", "Globex", TenantConfig(api_subdomain="globex", cli_prefix="globex"), NOW)
ACME_KEY = Principal(id="key:1", kind="api_key", tenants=frozenset({"acme"}))
PLATFORM_KEY = Principal(id="key:2", kind="api_key")


async def gate_for(policy: CrossTenantPolicy | None = None) -> TenantGate:
    store = MemoryTenantStore()
    clock = FakeClock(NOW)
    rules = RoutingRules.from_mapping(None, base_domain="api.company.com", trusted_proxies=["10.0.0.0/8"])
    directory = TenantDirectory(store, rules, clock)
    await directory.add(ACME)
    await directory.add(GLOBEX)
    quotas = TenantQuotas(
        QuotaBook(BUILTIN_PROFILES["standard"]), MemoryCounterStore(), MemoryLeaseGauge(clock)
    )
    return TenantGate(directory, quotas, policy or CrossTenantPolicy(), lambda tenant: {})


def host(name: str, forwarded: str | None = None) -> TenantRoute:
    return TenantRoute(RouteKind.HOST, name, forwarded)


@pytest.mark.parametrize(
    ("route", "tenant_id"),
    [
        (host("acme.api.company.com"), "acme"),
        (host("api.company.com"), None),
        (host("127.0.0.1:8000"), None),
        (TenantRoute(RouteKind.PREFIX, "acme-cli"), "acme"),
        (TenantRoute(RouteKind.PORT, "3001"), "acme"),
        (TenantRoute(RouteKind.PATH, "globex"), "globex"),
        (None, None),
    ],
)
async def test_each_channel_route_names_its_tenant_or_the_platform(
    route: TenantRoute | None, tenant_id: str | None
) -> None:
    gate = await gate_for()
    tenant = await gate.resolve(route, "192.0.2.1")
    assert (tenant.tenant_id if tenant else None) == tenant_id


@pytest.mark.parametrize(
    "route",
    [
        host("initech.api.company.com"),
        TenantRoute(RouteKind.PREFIX, "acme"),  # acme's id is not its CLI prefix
        TenantRoute(RouteKind.PREFIX, ""),
        TenantRoute(RouteKind.PORT, "3002"),
        TenantRoute(RouteKind.PORT, "-1"),
        TenantRoute(RouteKind.PATH, "initech"),
        TenantRoute(RouteKind.PATH, "ACME"),
    ],
)
async def test_a_route_naming_no_tenant_is_not_found(route: TenantRoute) -> None:
    gate = await gate_for()
    with pytest.raises(TenantNotFoundError):
        await gate.resolve(route, "192.0.2.1")


async def test_a_forwarded_host_counts_only_from_a_trusted_proxy() -> None:
    gate = await gate_for()
    forged = host("api.company.com", forwarded="acme.api.company.com")
    assert await gate.resolve(forged, "192.0.2.1") is None
    proxied = await gate.resolve(forged, "10.1.2.3")
    assert proxied is not None
    assert proxied.tenant_id == "acme"


async def test_a_credential_on_another_tenants_route_looks_like_an_unknown_tenant() -> None:
    gate = await gate_for()
    unknown = pytest.raises(TenantNotFoundError)
    with unknown as missing:
        await gate.resolve(host("initech.api.company.com"), "")
    with pytest.raises(TenantRefusedError) as foreign:
        gate.check_member(await gate.resolve(host("globex.api.company.com"), ""), ACME_KEY)
    assert foreign.value.message == missing.value.message
    assert foreign.value.code == missing.value.code
    assert foreign.value.refusal.tenant_id == "globex"
    assert "not a member" in foreign.value.refusal.reason


async def test_tenant_credentials_are_refused_on_the_platform_route_and_platform_ones_on_tenants() -> None:
    gate = await gate_for()
    with pytest.raises(TenantRefusedError):
        gate.check_member(None, ACME_KEY)
    gate.check_member(None, PLATFORM_KEY)
    with pytest.raises(TenantRefusedError):
        gate.check_member(ACME, PLATFORM_KEY)
    gate.check_member(ACME, ACME_KEY)


@pytest.mark.parametrize("isolated", [True, False])
async def test_session_isolation_keeps_a_session_in_the_tenant_it_was_made_in(isolated: bool) -> None:
    gate = await gate_for(CrossTenantPolicy(session_isolation=isolated))
    both = Principal(
        id="user:1", kind="password", tenants=frozenset({"acme", "globex"}), session_id="s1", tenant_id="acme"
    )
    gate.check_member(ACME, both)
    if isolated:
        with pytest.raises(TenantRefusedError) as refused:
            gate.check_member(GLOBEX, both)
        assert "session isolation" in refused.value.refusal.reason
    else:
        gate.check_member(GLOBEX, both)


async def test_a_suspended_tenant_is_refused_until_resumed() -> None:
    gate = await gate_for()
    await gate.directory.set_suspended("acme", True)
    acme = await gate.resolve(host("acme.api.company.com"), "")
    assert acme is not None
    with pytest.raises(TenantSuspendedError):
        gate.check_active(acme)
    await gate.directory.set_suspended("acme", False)
    acme = await gate.resolve(host("acme.api.company.com"), "")
    assert acme is not None
    gate.check_active(acme)


def test_cross_tenant_policies_refuse_unknown_keys_and_values() -> None:
    with pytest.raises(ConfigurationError, match="Unknown"):
        CrossTenantPolicy.from_mapping({"data_shareing": False})
    with pytest.raises(ConfigurationError, match="workflow_sharing"):
        CrossTenantPolicy.from_mapping({"workflow_sharing": "sometimes"})
    with pytest.raises(ConfigurationError, match="data_sharing"):
        CrossTenantPolicy.from_mapping({"data_sharing": "no"})


def test_workflow_sharing_false_keeps_each_workflow_to_one_tenant() -> None:
    closed = CrossTenantPolicy(workflow_sharing=False)
    with pytest.raises(ConfigurationError, match="several tenants"):
        closed.check_registration("report", True, None)
    with pytest.raises(ConfigurationError):
        closed.check_registration("report", True, frozenset({"acme", "globex"}))
    closed.check_registration("report", True, frozenset({"acme"}))
    CrossTenantPolicy(workflow_sharing="admin_only").check_registration("report", True, None)
    assert not closed.may_share_workflow(platform_admin=True)
    assert CrossTenantPolicy().may_share_workflow(platform_admin=True)
    assert not CrossTenantPolicy().may_share_workflow(platform_admin=False)
    assert CrossTenantPolicy(workflow_sharing=True).may_share_workflow(platform_admin=False)
