"""`TenantStore` on the SQL state database (table `tenants`): the registry every tenant shares.

The config is stored as JSON; its routes are copied into unique columns so that the database itself
refuses two tenants on one API subdomain, CLI prefix or MCP port. The workflows shared with a
tenant are a JSON list of names, changed under the row's lock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from nexus.backends.sql.engine import SQLITE_WRITE_LOCK, changed_rows, reading, transaction
from nexus.backends.sql.schema import require_aware, tenants
from nexus.backends.sql.user_store import dump_object
from nexus.core.tenancy.model import Tenant, TenantConfig, TenantStatus
from nexus.errors import TenantConflictError


class SqlTenantStore:
    """Tenants by id; the id and each route belong to at most one tenant."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # `add` reads before it writes: on SQLite it must hold the write lock from BEGIN, or a
        # concurrent writer would leave its read snapshot stale and the insert would fail as "locked".
        self._writer = engine.execution_options(**SQLITE_WRITE_LOCK)

    async def add(self, tenant: Tenant) -> None:
        """Store a new tenant.

        Raises:
            TenantConflictError: the id, the API subdomain, the CLI prefix or the MCP port is taken.
        """
        row = _to_row(tenant)
        async with transaction(self._writer) as connection:
            await _refuse_taken(connection, tenant)
            try:
                await connection.execute(tenants.insert(), row)
            except IntegrityError as exc:
                # Only a concurrent add gets here; the checks above name what is taken otherwise.
                routes = ", ".join(
                    f"{name} {value!r}" for name, value in _routes(tenant) if value is not None
                )
                raise TenantConflictError(
                    f"The tenant id {tenant.tenant_id!r} or one of its routes ({routes or 'none'}) "
                    "is already another tenant's."
                ) from exc

    async def get(self, tenant_id: str) -> Tenant | None:
        query = select(tenants).where(tenants.c.tenant_id == tenant_id, _LIVE)
        async with reading(self._engine) as connection:
            row = (await connection.execute(query)).mappings().first()
        return None if row is None else _to_tenant(row)

    async def list(self) -> Sequence[Tenant]:
        """Every tenant, by id."""
        async with reading(self._engine) as connection:
            query = select(tenants).where(_LIVE).order_by(tenants.c.tenant_id)
            rows = (await connection.execute(query)).mappings().all()
        return [_to_tenant(row) for row in rows]

    async def set_suspended(self, tenant_id: str, at: datetime | None) -> bool:
        """Suspend (at `at`) or reactivate (None); False when there is no such tenant."""
        if at is None:
            values: dict[str, Any] = {"status": TenantStatus.ACTIVE.value, "suspended_at": None}
        else:
            values = {"status": TenantStatus.SUSPENDED.value, "suspended_at": require_aware(at, "at")}
        statement = update(tenants).where(tenants.c.tenant_id == tenant_id, _LIVE).values(**values)
        return await changed_rows(self._engine, statement) == 1

    async def delete(self, tenant_id: str, at: datetime) -> bool:
        """Mark the tenant deleted at `at`: gone from every listing and route (its routes are free
        for other tenants), its id never reused. False when there is no such live tenant."""
        statement = (
            update(tenants)
            .where(tenants.c.tenant_id == tenant_id, _LIVE)
            .values(deleted_at=require_aware(at, "at"), api_subdomain=None, cli_prefix=None, mcp_port=None)
        )
        return await changed_rows(self._engine, statement) == 1

    async def set_workflow_shared(self, tenant_id: str, workflow: str, shared: bool) -> Tenant | None:
        """Add `workflow` to the tenant's shared workflows (or take it out); None when no such tenant.

        The row is read and written in one transaction holding its lock (SQLite: the write lock from
        BEGIN; PostgreSQL: FOR UPDATE), so concurrent shares of one tenant never lose each other.
        """
        query = select(tenants).where(tenants.c.tenant_id == tenant_id, _LIVE).with_for_update()
        async with transaction(self._writer) as connection:
            row = (await connection.execute(query)).mappings().first()
            if row is None:
                return None
            tenant = _to_tenant(row)
            names = tenant.shared_workflows | {workflow} if shared else tenant.shared_workflows - {workflow}
            changed = replace(tenant, shared_workflows=frozenset(names))  # checks the name first
            if changed.shared_workflows != tenant.shared_workflows:
                statement = update(tenants).where(tenants.c.tenant_id == tenant_id)
                await connection.execute(statement.values(shared_workflows=_names(changed)))
        return changed


def _routes(tenant: Tenant) -> tuple[tuple[str, str | int | None], ...]:
    config = tenant.config
    return (
        ("api_subdomain", config.api_subdomain),
        ("cli_prefix", config.cli_prefix),
        ("mcp_port", config.mcp_port),
    )


async def _refuse_taken(connection: AsyncConnection, tenant: Tenant) -> None:
    id_query = select(tenants.c.deleted_at).where(tenants.c.tenant_id == tenant.tenant_id)
    found = (await connection.execute(id_query)).first()
    if found is not None:
        raise TenantConflictError(
            f"A tenant with id {tenant.tenant_id!r} already exists."
            if found.deleted_at is None
            else f"Tenant id {tenant.tenant_id!r} belonged to a deleted tenant; ids are never reused."
        )
    for name, value in _routes(tenant):
        if value is None:
            continue
        query = select(tenants.c.tenant_id).where(tenants.c[name] == value)
        if (await connection.execute(query)).first() is not None:
            raise TenantConflictError(f"The {name} {value!r} is already another tenant's.")


# Deleted tenants' rows stay (their ids are never reused) but are no tenant's any more.
_LIVE = tenants.c.deleted_at.is_(None)


def _to_row(tenant: Tenant) -> dict[str, Any]:
    suspended_at = tenant.suspended_at
    return {
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "config": dump_object(tenant.config.to_mapping(), "Tenant.config"),
        "status": TenantStatus(tenant.status).value,
        "created_at": require_aware(tenant.created_at, "created_at"),
        "suspended_at": None if suspended_at is None else require_aware(suspended_at, "suspended_at"),
        "shared_workflows": _names(tenant),
        **dict(_routes(tenant)),
    }


def _names(tenant: Tenant) -> str:
    return json.dumps(sorted(tenant.shared_workflows))


def _to_tenant(row: Any) -> Tenant:
    return Tenant(
        tenant_id=row["tenant_id"],
        name=row["name"],
        config=TenantConfig.from_mapping(json.loads(row["config"])),
        created_at=row["created_at"],
        status=TenantStatus(row["status"]),
        suspended_at=row["suspended_at"],
        shared_workflows=frozenset(json.loads(row["shared_workflows"])),
    )
