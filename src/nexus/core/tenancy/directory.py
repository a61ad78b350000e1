"""The tenants a node knows: the registry's contents as a routing index, kept fresh.

Changes made through this directory take effect at once on this node; changes made on another
node arrive within `refresh_s`, when the next request finds the index older than that and reloads
it (one refresh at a time). Requests in between read the index they have, never the store.
Imports only core and errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from nexus.core.ports import Clock
from nexus.core.tenancy.model import Tenant
from nexus.core.tenancy.ports import TenantStore
from nexus.core.tenancy.routing import RoutingRules, TenantIndex, TenantRouter
from nexus.errors import ConfigurationError

log = logging.getLogger("nexus.tenancy.directory")


class TenantDirectory:
    """Tenants by id and by route, from a `TenantStore`; `router` answers requests."""

    def __init__(
        self,
        store: TenantStore,
        rules: RoutingRules,
        clock: Clock,
        *,
        refresh_s: float = 5.0,
        max_stale_s: float = 300.0,
    ) -> None:
        if refresh_s <= 0 or max_stale_s < refresh_s:
            raise ConfigurationError("refresh_s must be positive and max_stale_s at least refresh_s.")
        self._store = store
        self._clock = clock
        self._refresh_s = refresh_s
        self._max_stale_s = max_stale_s
        self.router = TenantRouter(rules)
        self._loaded_at: float | None = None
        self._retry_at = 0.0
        self._started = 0  # reloads begun
        self._installed = 0  # the newest reload whose index is in force
        self._refreshing = asyncio.Lock()
        self.on_removed: Callable[[frozenset[str]], None] | None = None
        """Told the ids of tenants gone since the last reload (deleted here or on another node)."""

    async def current(self) -> TenantRouter:
        """The router, refreshed first when its index is older than `refresh_s`.

        One refresh at a time; when the store fails, the index in hand keeps answering (for up to
        `max_stale_s`) and the store is tried again after `refresh_s`, not once per request.
        """
        if self._is_due():
            async with self._refreshing:
                if self._is_due():
                    await self._refresh()
        return self.router

    async def reload(self) -> None:
        """Read the registry and route by it, unless a reload begun later has already done so
        (so a slow refresh never undoes a change made meanwhile)."""
        self._started += 1
        generation = self._started
        tenants = await self._store.list()
        if generation > self._installed:
            self._installed = generation
            before = self.router.index.by_id
            self.router = TenantRouter(self.router.rules, TenantIndex.of(tenants))
            self._loaded_at = self._clock.monotonic()
            gone = before.keys() - self.router.index.by_id.keys()
            if gone and self.on_removed is not None:
                self.on_removed(frozenset(gone))

    def _is_due(self) -> bool:
        now = self._clock.monotonic()
        loaded = self._loaded_at
        return loaded is None or (now - loaded >= self._refresh_s and now >= self._retry_at)

    async def _refresh(self) -> None:
        try:
            await self.reload()
        except Exception:
            now, loaded = self._clock.monotonic(), self._loaded_at
            if loaded is None or now - loaded >= self._max_stale_s:
                raise  # no index, or one too old to trust: fail closed
            self._retry_at = now + self._refresh_s
            log.warning("the tenant registry could not be read; routing by the index in hand", exc_info=True)

    async def add(self, tenant: Tenant) -> None:
        await self._store.add(tenant)
        await self.reload()

    async def set_suspended(self, tenant_id: str, suspended: bool) -> bool:
        changed = await self._store.set_suspended(tenant_id, self._clock.now() if suspended else None)
        await self.reload()
        return changed

    async def delete(self, tenant_id: str) -> bool:
        deleted = await self._store.delete(tenant_id, self._clock.now())
        await self.reload()
        return deleted

    async def set_workflow_shared(self, tenant_id: str, workflow: str, shared: bool) -> Tenant | None:
        """Share `workflow` with the tenant (or take it back); None when there is no such tenant."""
        tenant = await self._store.set_workflow_shared(tenant_id, workflow, shared)
        await self.reload()
        return tenant

    async def list(self) -> Sequence[Tenant]:
        return await self._store.list()

    async def get(self, tenant_id: str) -> Tenant | None:
        return await self._store.get(tenant_id)
