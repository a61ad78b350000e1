"""The tenant directory: local changes route at once, other nodes' changes within the refresh time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from nexus.backends.memory import MemoryTenantStore
from nexus.core.tenancy.directory import TenantDirectory
from nexus.core.tenancy.model import Tenant, TenantConfig
from nexus.core.tenancy.routing import RoutingRules
from nexus.testing.clock import FakeClock

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
RULES = RoutingRules.from_mapping({}, base_domain="api.company.com")


def acme() -> Tenant:
    return Tenant("acme", "Acme", TenantConfig(api_subdomain="acme", cli_prefix="acme"), NOW)


async def test_a_tenant_added_here_routes_at_once_and_a_deleted_one_stops() -> None:
    directory = TenantDirectory(MemoryTenantStore(), RULES, FakeClock(NOW))
    await directory.add(acme())
    router = await directory.current()
    assert router.for_api("acme.api.company.com", "192.0.2.1") is not None
    assert await directory.delete("acme")
    assert (await directory.current()).for_cli("acme") is None


async def test_a_suspension_shows_in_the_routed_tenant() -> None:
    clock = FakeClock(NOW)
    directory = TenantDirectory(MemoryTenantStore(), RULES, clock)
    await directory.add(acme())
    assert await directory.set_suspended("acme", True)
    routed = (await directory.current()).for_cli("acme")
    assert routed is not None
    assert not routed.is_active
    assert routed.suspended_at == NOW
    assert await directory.set_suspended("acme", False)
    assert (await directory.current()).for_cli("acme").is_active  # type: ignore[union-attr]
    assert not await directory.set_suspended("nobody", True)


async def test_another_nodes_change_arrives_within_the_refresh_time() -> None:
    store, clock = MemoryTenantStore(), FakeClock(NOW)
    here = TenantDirectory(store, RULES, clock, refresh_s=5)
    there = TenantDirectory(store, RULES, clock, refresh_s=5)
    assert (await here.current()).for_cli("acme") is None
    await there.add(acme())  # another node, same registry
    clock.advance(4.9)
    assert (await here.current()).for_cli("acme") is None  # still the index it has
    clock.advance(0.2)
    assert (await here.current()).for_cli("acme") is not None


async def test_requests_racing_a_stale_index_reload_it_once() -> None:
    class CountingStore(MemoryTenantStore):
        lists = 0

        async def list(self):  # type: ignore[no-untyped-def]
            CountingStore.lists += 1
            await asyncio.sleep(0)
            return await super().list()

    directory = TenantDirectory(CountingStore(), RULES, FakeClock(NOW))
    await asyncio.gather(*(directory.current() for _ in range(20)))
    assert CountingStore.lists == 1
