"""Tenant quotas: counted atomically in the counter store and the lease gauge (memory, or Redis).

Requests per hour are a moving-window count of API calls; workflows running at once and live CLI
sessions are leases that expire unless renewed, so a node that dies frees its share; tools exposed
over MCP are checked when a set of tools is enabled. Imports only core and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

from nexus.core.ports import CounterStore, Meter
from nexus.core.tenancy.model import BUILTIN_PROFILES, QuotaProfile, Resource, Tenant
from nexus.core.tenancy.ports import LeaseGauge
from nexus.core.types import Channel, Usage
from nexus.errors import ConfigurationError, QuotaExceededError

log = logging.getLogger("nexus.tenancy.quota")
HOUR_S = 3600
# A run renews its lease every third of this; a dead node's runs stop counting after it.
RUN_LEASE_S = 30.0


def quota_key(tenant_id: str, resource: Resource) -> str:
    return f"tenant:{tenant_id}:{resource.value}"


@dataclass(frozen=True, slots=True)
class QuotaBook:
    """Which profile each tenant counts against: its `quota_profile`, else `default`."""

    default: QuotaProfile
    profiles: Mapping[str, QuotaProfile] = field(default_factory=lambda: BUILTIN_PROFILES)

    def profile_of(self, tenant: Tenant) -> QuotaProfile:
        name = tenant.config.quota_profile
        if name is None:
            return self.default
        profile = self.profiles.get(name)
        if profile is None:  # registration checks names; a profile removed since fails closed
            raise ConfigurationError(
                f"Tenant {tenant.tenant_id!r} names quota profile {name!r}, which does not exist."
            )
        return profile

    def check_profile(self, name: str | None) -> None:
        if name is not None and name not in self.profiles:
            raise ConfigurationError(f"Unknown quota profile {name!r}; known: {sorted(self.profiles)}.")


class TenantQuotas:
    """Counts each tenant's use of each resource against its profile; refuses past the limit."""

    def __init__(
        self,
        book: QuotaBook,
        counters: CounterStore,
        leases: LeaseGauge,
        *,
        run_lease_s: float = RUN_LEASE_S,
        meter: Meter | None = None,
    ) -> None:
        """`meter` is told each tenant's use after every count (`nexus_tenant_resource_usage`)."""
        self.book = book
        self._counters = counters
        self._leases = leases
        self._run_lease_s = run_lease_s
        self._meter = meter

    async def count_request(self, tenant: Tenant, channel: Channel) -> Usage | None:
        """Count an API call against `api_requests_per_hour` (other channels do not count)."""
        limit = self.book.profile_of(tenant).limit(Resource.API_REQUESTS_PER_HOUR)
        if channel is not Channel.API or limit is None:
            return None
        key = quota_key(tenant.tenant_id, Resource.API_REQUESTS_PER_HOUR)
        usage = await self._counters.hit(key, limit=limit, window_s=HOUR_S)
        if self._meter is not None:
            used = limit - usage.remaining
            self._meter.observe_tenant_usage(tenant.tenant_id, Resource.API_REQUESTS_PER_HOUR.value, used)
        if not usage.allowed:
            raise _exceeded(
                tenant, Resource.API_REQUESTS_PER_HOUR, limit, math.ceil(usage.reset_after_s) or 1
            )
        return usage

    @contextlib.asynccontextmanager
    async def running(self, tenant: Tenant, run_id: str) -> AsyncIterator[None]:
        """Hold one of the tenant's `concurrent_workflows` slots while the block runs.

        The slot is a lease renewed in the background; a renewal that fails is retried, a lease
        lost meanwhile is taken again, and neither ever changes how the run itself ends.
        """
        limit = self.book.profile_of(tenant).limit(Resource.CONCURRENT_WORKFLOWS)
        if limit is None:
            yield
            return
        key = quota_key(tenant.tenant_id, Resource.CONCURRENT_WORKFLOWS)
        await self._take(tenant, Resource.CONCURRENT_WORKFLOWS, key, run_id, limit, self._run_lease_s, 1)
        renewing = asyncio.create_task(self._keep(key, run_id, limit))
        try:
            yield
        finally:
            renewing.cancel()
            try:
                # wait() neither raises the renewer's errors nor swallows a cancellation of ours.
                await asyncio.wait({renewing})
            finally:
                await self._release(tenant.tenant_id, Resource.CONCURRENT_WORKFLOWS, run_id)

    async def open_cli_session(self, tenant: Tenant, session_id: str, *, ttl_s: float) -> None:
        """Count a CLI session against `cli_sessions` for its lifetime (`close_cli_session` ends it)."""
        limit = self.book.profile_of(tenant).limit(Resource.CLI_SESSIONS)
        if limit is None:
            return
        key = quota_key(tenant.tenant_id, Resource.CLI_SESSIONS)
        await self._take(tenant, Resource.CLI_SESSIONS, key, session_id, limit, ttl_s, 60)

    async def keep_cli_session(self, tenant: Tenant, session_id: str, *, ttl_s: float) -> None:
        """Renew a CLI session's seat, or take it again if it lapsed (refused when none is free)."""
        if self.book.profile_of(tenant).limit(Resource.CLI_SESSIONS) is None:
            return
        key = quota_key(tenant.tenant_id, Resource.CLI_SESSIONS)
        if not await self._leases.renew(key, session_id, ttl_s=ttl_s):
            await self.open_cli_session(tenant, session_id, ttl_s=ttl_s)

    async def close_cli_session(self, tenant_id: str, session_id: str) -> None:
        await self._release(tenant_id, Resource.CLI_SESSIONS, session_id)

    def forget_all(self, tenant_ids: Iterable[str]) -> None:
        """Deleted tenants: their usage series leave the metrics."""
        if self._meter is not None:
            for tenant_id in tenant_ids:
                self._meter.forget_tenant(tenant_id)

    def check_tools(self, tenant: Tenant, tools: int) -> None:
        """Refuse exposing more than `mcp_tools` tools to the tenant over MCP (when enabling them)."""
        limit = self.book.profile_of(tenant).limit(Resource.MCP_TOOLS)
        if limit is not None and tools > limit:
            asked = f"{tools} were asked for"
            raise ConfigurationError(
                f"Tenant {tenant.tenant_id!r} may expose at most {limit} MCP tools (mcp_tools); {asked}."
            )

    async def in_use(self, tenant: Tenant) -> dict[Resource, int]:
        """What the tenant holds now, of the resources counted by lease (for the usage metric)."""
        return {
            resource: await self._leases.count(quota_key(tenant.tenant_id, resource))
            for resource in (Resource.CONCURRENT_WORKFLOWS, Resource.CLI_SESSIONS)
        }

    async def _take(
        self,
        tenant: Tenant,
        resource: Resource,
        key: str,
        lease_id: str,
        limit: int,
        ttl_s: float,
        retry_s: int,
    ) -> None:
        try:
            taken = await self._leases.acquire(key, lease_id, limit=limit, ttl_s=ttl_s)
        except BaseException:
            # Cancelled or failed while the store may already have granted it: give it back.
            await self._release(tenant.tenant_id, resource, lease_id)
            raise
        if taken is None:
            raise _exceeded(tenant, resource, limit, retry_s)
        if self._meter is not None:
            self._meter.observe_tenant_usage(tenant.tenant_id, resource.value, taken)

    async def _keep(self, key: str, run_id: str, limit: int) -> None:
        """Renew the run's lease until cancelled; take it again if it was lost (a store restart)."""
        ttl_s = self._run_lease_s
        while True:
            await asyncio.sleep(ttl_s / 3)
            try:
                renewed = await self._leases.renew(key, run_id, ttl_s=ttl_s)
                retaken = renewed or await self._leases.acquire(key, run_id, limit=limit, ttl_s=ttl_s)
                if retaken is None:
                    log.warning("a run lost its quota slot and others took it", extra={"quota_key": key})
            except Exception:  # the store is down: try again next time, the run goes on
                log.warning("could not renew a run's quota slot", extra={"quota_key": key}, exc_info=True)

    async def _release(self, tenant_id: str, resource: Resource, lease_id: str) -> None:
        key = quota_key(tenant_id, resource)
        try:
            await self._leases.release(key, lease_id)
            if self._meter is not None:
                self._meter.observe_tenant_usage(tenant_id, resource.value, await self._leases.count(key))
        except Exception:  # the lease expires by itself; the caller's outcome stands
            log.warning(
                "could not release a quota slot; it expires by itself",
                extra={"quota_key": key},
                exc_info=True,
            )


def _exceeded(tenant: Tenant, resource: Resource, limit: int, retry_after: int) -> QuotaExceededError:
    return QuotaExceededError(
        f"Tenant {tenant.tenant_id!r} is at its {resource.value} quota of {limit}; retry in {retry_after} s.",
        retry_after=retry_after,
        resource=resource.value,
    )
