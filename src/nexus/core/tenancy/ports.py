"""Tenancy's ports: the tenant registry (memory, SQL), the lease gauge of quotas (memory, Redis) and
each tenant's own data (PostgreSQL).

The registry is shared by every tenant (it is how a request finds its tenant); a tenant's own data
lives apart, as its isolation level says. Imports only core.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from nexus.core.tenancy.context import TenantPlacement
from nexus.core.tenancy.model import Tenant


class LeaseGauge(Protocol):
    """Things in use at once (running workflows, live CLI sessions), counted per key across nodes.

    Each use holds a lease that expires unless renewed, so a node that dies mid-run frees its
    share after `ttl_s` instead of holding the quota forever. Every operation is atomic.
    """

    async def acquire(self, key: str, lease_id: str, *, limit: int, ttl_s: float) -> int | None:
        """Take a lease if fewer than `limit` live ones exist: the count in use after taking it,
        or None when the key is at its limit (nothing taken)."""
        ...

    async def renew(self, key: str, lease_id: str, *, ttl_s: float) -> bool:
        """Extend a live lease; False when it has expired or was never taken."""
        ...

    async def release(self, key: str, lease_id: str) -> None:
        """Give a lease back (no error when it is gone already)."""
        ...

    async def count(self, key: str) -> int:
        """Live leases under `key` (for the usage metric)."""
        ...

    async def close(self) -> None: ...


class TenantStore(Protocol):
    async def add(self, tenant: Tenant) -> None:
        """Raises `TenantConflictError` when the id, the API subdomain, the CLI prefix or the MCP
        port is already another tenant's (each routes to exactly one tenant)."""
        ...

    async def get(self, tenant_id: str) -> Tenant | None: ...

    async def list(self) -> Sequence[Tenant]:
        """Every tenant, by id."""
        ...

    async def set_suspended(self, tenant_id: str, at: datetime | None) -> bool:
        """Suspend (at `at`) or reactivate (None); False when there is no such tenant."""
        ...

    async def delete(self, tenant_id: str, at: datetime) -> bool:
        """Delete the tenant (at `at`): gone from every listing and route, which others may then
        take; its id is never given out again (credentials, sessions and audit records name it)."""
        ...

    async def set_workflow_shared(self, tenant_id: str, workflow: str, shared: bool) -> Tenant | None:
        """Add `workflow` to the tenant's `shared_workflows` (or take it out), atomically: the tenant
        as it is afterwards, or None when there is no such tenant."""
        ...


class TenantDataStore(Protocol):
    """Each tenant's own data: where it lives, set up and torn down with the tenant, and measured."""

    def placement(self, tenant: Tenant) -> TenantPlacement:
        """Where the tenant's data lives (what `TenantContext.placement` carries); no I/O."""
        ...

    async def provision(self, tenant: Tenant) -> None:
        """Create what the tenant's data needs; safe to repeat."""
        ...

    async def drop(self, tenant: Tenant) -> None:
        """Remove the tenant's data and everything made for it; safe to repeat."""
        ...

    async def size_bytes(self, tenant: Tenant) -> int:
        """The measured size of the tenant's data (what its `storage_mb` quota counts)."""
        ...

    async def grant_read(self, owner: Tenant, reader: Tenant) -> None:
        """Let `reader` read `owner`'s data (cross_tenant_policies data_sharing=True only)."""
        ...

    async def revoke_read(self, owner: Tenant, reader: Tenant) -> None: ...

    async def close(self) -> None: ...
