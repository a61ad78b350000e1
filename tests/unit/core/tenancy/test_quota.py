"""Tenant quotas, on the memory counter store and lease gauge: each resource refuses past its limit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from nexus.backends.counters import MemoryCounterStore
from nexus.backends.lease_gauge import MemoryLeaseGauge
from nexus.core.tenancy.model import BUILTIN_PROFILES, QuotaProfile, Resource, Tenant, TenantConfig
from nexus.core.tenancy.quota import QuotaBook, TenantQuotas
from nexus.core.types import Channel
from nexus.errors import ConfigurationError, QuotaExceededError
from nexus.testing.clock import FakeClock

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TIGHT = QuotaProfile("tight", api_requests_per_hour=3, concurrent_workflows=2, cli_sessions=1, mcp_tools=2)


def tenant(tenant_id: str = "acme", profile: str | None = "tight") -> Tenant:
    return Tenant(tenant_id, tenant_id.title(), TenantConfig(quota_profile=profile), NOW)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def quotas(clock: FakeClock) -> TenantQuotas:
    book = QuotaBook(default=BUILTIN_PROFILES["unlimited"], profiles={**BUILTIN_PROFILES, "tight": TIGHT})
    return TenantQuotas(book, MemoryCounterStore(), MemoryLeaseGauge(clock), run_lease_s=30.0)


async def test_api_requests_per_hour_counts_api_calls_only_and_refuses_past_the_limit(
    quotas: TenantQuotas,
) -> None:
    acme = tenant()
    for _ in range(3):
        assert await quotas.count_request(acme, Channel.API) is not None
    assert await quotas.count_request(acme, Channel.MCP) is None  # the quota is about the API
    with pytest.raises(QuotaExceededError) as refused:
        await quotas.count_request(acme, Channel.API)
    assert refused.value.code == "quota_exceeded"
    assert 0 < refused.value.retry_after <= 3600
    assert refused.value.detail["resource"] == "api_requests_per_hour"
    # Another tenant's count is its own.
    assert await quotas.count_request(tenant("globex"), Channel.API) is not None


async def test_concurrent_workflows_hold_a_slot_while_running_and_free_it_after(quotas: TenantQuotas) -> None:
    acme = tenant()
    async with quotas.running(acme, "run-1"), quotas.running(acme, "run-2"):
        assert (await quotas.in_use(acme))[Resource.CONCURRENT_WORKFLOWS] == 2
        with pytest.raises(QuotaExceededError, match="concurrent_workflows quota of 2"):
            async with quotas.running(acme, "run-3"):
                pass
    assert (await quotas.in_use(acme))[Resource.CONCURRENT_WORKFLOWS] == 0
    async with quotas.running(acme, "run-4"):
        pass


async def test_a_failing_run_frees_its_slot(quotas: TenantQuotas) -> None:
    acme = tenant()
    with pytest.raises(RuntimeError):
        async with quotas.running(acme, "run-1"):
            raise RuntimeError("the workflow failed")
    assert (await quotas.in_use(acme))[Resource.CONCURRENT_WORKFLOWS] == 0


async def test_a_long_run_keeps_its_slot_by_renewing_its_lease(clock: FakeClock) -> None:
    leases = MemoryLeaseGauge(clock)
    book = QuotaBook(default=TIGHT)
    quotas = TenantQuotas(book, MemoryCounterStore(), leases, run_lease_s=0.06)
    acme = tenant(profile=None)
    async with quotas.running(acme, "run-1"):
        for _ in range(12):  # twice the lease's first life: only renewal (every 0.02 s) keeps it
            await asyncio.sleep(0.01)
            clock.advance(0.01)
        assert await leases.count("tenant:acme:concurrent_workflows") == 1
    # Without renewal the same wait ends a lease: the control.
    assert await leases.acquire("control", "x", limit=1, ttl_s=0.06) == 1
    clock.advance(0.12)
    assert await leases.count("control") == 0


async def test_cli_sessions_are_counted_until_closed(quotas: TenantQuotas) -> None:
    acme = tenant()
    await quotas.open_cli_session(acme, "s1", ttl_s=3600)
    with pytest.raises(QuotaExceededError, match="cli_sessions"):
        await quotas.open_cli_session(acme, "s2", ttl_s=3600)
    await quotas.close_cli_session("acme", "s1")
    await quotas.open_cli_session(acme, "s2", ttl_s=3600)


def test_exposing_more_mcp_tools_than_the_quota_is_a_clear_error(quotas: TenantQuotas) -> None:
    quotas.check_tools(tenant(), 2)
    with pytest.raises(ConfigurationError, match="at most 2 MCP tools"):
        quotas.check_tools(tenant(), 3)


def test_a_tenant_without_a_profile_counts_against_the_default_and_unknown_profiles_fail_closed() -> None:
    book = QuotaBook(default=TIGHT)
    assert book.profile_of(tenant(profile=None)) is TIGHT
    assert book.profile_of(tenant(profile="enterprise_large")) is BUILTIN_PROFILES["enterprise_large"]
    with pytest.raises(ConfigurationError, match="does not exist"):
        book.profile_of(tenant(profile="gone"))
    with pytest.raises(ConfigurationError, match="Unknown quota profile"):
        book.check_profile("gone")


async def test_unlimited_resources_are_not_counted(quotas: TenantQuotas) -> None:
    free = tenant(profile="unlimited")
    for _ in range(10):
        assert await quotas.count_request(free, Channel.API) is None
    async with quotas.running(free, "r1"), quotas.running(free, "r2"), quotas.running(free, "r3"):
        assert (await quotas.in_use(free))[Resource.CONCURRENT_WORKFLOWS] == 0
