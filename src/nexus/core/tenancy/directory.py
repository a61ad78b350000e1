"""The tenants a node knows: the registry's contents as a routing index, kept fresh.

Changes made through this directory take effect at once on this node; changes made on another
node arrive within `refresh_s`, when the next request finds the index older than that and reloads
it (one reload at a time). Requests in between read the index they have, never the store.
Imports only core and errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nexus.core.ports import Clock
from nexus.core.tenancy.model import Tenant
from nexus.core.tenancy.ports import TenantStore
from nexus.core.tenancy.routing import RoutingRules, TenantIndex, TenantRouter
from nexus.errors import ConfigurationError


class TenantDirectory:
    """Tenants by id and by route, from a `TenantStore`; `router` answers requests."""

    def __init__(
        self, store: TenantStore, rules: RoutingRules, clock: Clock, *, refresh_s: float = 5.0
    ) -> None:
        if refresh_s <= 0:
            raise ConfigurationError(f"refresh_s must be positive, got {refresh_s!r}.")
        self._store = store
        self._clock = clock
        self._refresh_s = refresh_s
        self.router = TenantRouter(rules)
        self._loaded_at: float | None = None
        self._reloading = asyncio.Lock()

    async def current(self) -> TenantRouter:
        """The router, reloaded first when its index is older than `refresh_s`."""
        loaded = self._loaded_at
        if loaded is None or self._clock.monotonic() - loaded >= self._refresh_s:
            async with self._reloading:
                if self._loaded_at is loaded:  # nobody reloaded while this request waited
                    await self.reload()
        return self.router

    async def reload(self) -> None:
        tenants = await self._store.list()
        self.router = TenantRouter(self.router.rules, TenantIndex.of(tenants))
        self._loaded_at = self._clock.monotonic()

    async def add(self, tenant: Tenant) -> None:
        await self._store.add(tenant)
        await self.reload()

    async def set_suspended(self, tenant_id: str, suspended: bool) -> bool:
        changed = await self._store.set_suspended(tenant_id, self._clock.now() if suspended else None)
        await self.reload()
        return changed

    async def delete(self, tenant_id: str) -> bool:
        deleted = await self._store.delete(tenant_id)
        await self.reload()
        return deleted

    async def list(self) -> Sequence[Tenant]:
        return await self._store.list()

    async def get(self, tenant_id: str) -> Tenant | None:
        return await self._store.get(tenant_id)
