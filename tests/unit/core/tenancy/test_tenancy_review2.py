"""Review of issue 5 (multi-tenancy), pure logic: what a tenant's creation cleans up when it half
fails, and what a tenant re-created under a deleted one's id inherits. The tenant's data store is a
recording stand-in (the PostgreSQL one is covered in tests/integration); each test fails because of
the defect its strict xfail reason names."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from nexus.assembly import TenancyRuntime
from nexus.backends.counters import MemoryCounterStore
from nexus.backends.lease_gauge import MemoryLeaseGauge
from nexus.backends.memory import MemoryTenantStore
from nexus.core.catalog import Catalog
from nexus.core.tenancy.context import MIB, TenantPlacement, tenant_context_of
from nexus.core.tenancy.directory import TenantDirectory
from nexus.core.tenancy.gate import TenantGate
from nexus.core.tenancy.model import IsolationLevel, Tenant
from nexus.core.tenancy.quota import TenantQuotas
from nexus.core.tenancy.routing import RoutingRules
from nexus.enterprise.tenancy import TenantManager
from nexus.errors import DependencyUnavailableError, QuotaExceededError, TenantConflictError
from nexus.testing.clock import FakeClock

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class RecordingData:
    """A `TenantDataStore` that records what was asked of it and reports a settable size."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.size = 0

    def placement(self, tenant: Tenant) -> TenantPlacement:
        return TenantPlacement(
            IsolationLevel.STRICT, schema=tenant.tenant_id, role=f"nexus_tenant_{tenant.tenant_id}"
        )

    async def provision(self, tenant: Tenant) -> None:
        self.calls.append(("provision", tenant.tenant_id))

    async def drop(self, tenant: Tenant) -> None:
        self.calls.append(("drop", tenant.tenant_id))

    async def size_bytes(self, tenant: Tenant) -> int:
        return self.size

    async def grant_read(self, owner: Tenant, reader: Tenant) -> None:
        raise AssertionError("not used")

    async def revoke_read(self, owner: Tenant, reader: Tenant) -> None:
        raise AssertionError("not used")

    async def close(self) -> None:
        return None


class ListFailsAfterAdd(MemoryTenantStore):
    """The registry commits a new tenant, then the read that follows fails once (a dropped
    connection, a failover): what `TenantDirectory.add` does right after `store.add`."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next_list = False

    async def add(self, tenant: Tenant) -> None:
        await super().add(tenant)
        self.fail_next_list = True

    async def list(self) -> Sequence[Tenant]:
        if self.fail_next_list:
            self.fail_next_list = False
            raise DependencyUnavailableError("The state store is unavailable.")
        return await super().list()


def runtime_for(
    store: MemoryTenantStore, data: RecordingData, clock: FakeClock, manager: TenantManager
) -> TenancyRuntime:
    directory = TenantDirectory(store, RoutingRules(base_domain="api.test"), clock)
    leases = MemoryLeaseGauge(clock)
    quotas = TenantQuotas(manager.quota_book(), MemoryCounterStore(), leases)
    gate = TenantGate(directory, quotas, manager.policy, lambda tenant: {})
    return TenancyRuntime(manager, directory, gate, leases, clock, data=data)


async def test_a_failure_after_the_tenant_is_registered_does_not_drop_its_data() -> None:
    store, data, clock = ListFailsAfterAdd(), RecordingData(), FakeClock(NOW)
    runtime = runtime_for(store, data, clock, TenantManager(isolation_level="strict"))

    with pytest.raises(DependencyUnavailableError):
        await runtime.create(Catalog(), "acme", "Acme", None)

    registered = await store.get("acme") is not None
    assert registered, "the registry holds the tenant"
    assert ("drop", "acme") not in data.calls, "a registered tenant's schema and role were dropped"


async def test_a_deleted_tenants_id_and_storage_measure_are_never_inherited() -> None:
    """A new tenant cannot take a deleted one's id at all; and the deleted tenant's storage gate
    (keyed by id and creation time) is dropped with it, never handed to another tenant."""
    store, data, clock = MemoryTenantStore(), RecordingData(), FakeClock(NOW)
    manager = TenantManager(isolation_level="strict", resource_quotas={"storage_mb": 1})
    runtime = runtime_for(store, data, clock, manager)
    old = await runtime.create(Catalog(), "acme", "Old Acme", None)
    data.size = 5 * MIB  # the old tenant filled its schema past its quota
    old_gate = tenant_context_of(runtime.context(old))
    assert old_gate is not None
    assert old_gate.storage is not None
    with pytest.raises(QuotaExceededError):
        await old_gate.storage.check_write()

    assert await runtime.delete("acme")
    assert not runtime.storage  # the gate went with the tenant
    with pytest.raises(TenantConflictError, match="never reused"):
        await runtime.create(Catalog(), "acme", "New Acme", None)
    data.size = 0  # another tenant's schema is new and empty
    new = await runtime.create(Catalog(), "acme2", "New Acme", None)
    context = tenant_context_of(runtime.context(new))
    assert context is not None
    assert context.storage is not None
    await context.storage.check_write()
