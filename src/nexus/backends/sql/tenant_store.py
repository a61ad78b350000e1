"""`TenantStore` on the SQL state database (table `tenants`): the registry every tenant shares.

The config is stored as JSON; its routes are copied into unique columns so that the database itself
refuses two tenants on one API subdomain, CLI prefix or MCP port.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from nexus.backends.sql.engine import SQLITE_WRITE_LOCK, changed_rows, reading, transaction
from nexus.backends.sql.schema import require_aware, tenants
from nexus.backends.sql.user_store import dump_object
from nexus.core.tenancy.model import Tenant, TenantConfig, TenantStatus
from nexus.errors import ConfigurationError


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
            ConfigurationError: the id, the API subdomain, the CLI prefix or the MCP port is taken.
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
                raise ConfigurationError(
                    f"The tenant id {tenant.tenant_id!r} or one of its routes ({routes or 'none'}) "
                    "is already another tenant's."
                ) from exc

    async def get(self, tenant_id: str) -> Tenant | None:
        query = select(tenants).where(tenants.c.tenant_id == tenant_id)
        async with reading(self._engine) as connection:
            row = (await connection.execute(query)).mappings().first()
        return None if row is None else _to_tenant(row)

    async def list(self) -> Sequence[Tenant]:
        """Every tenant, by id."""
        async with reading(self._engine) as connection:
            rows = (await connection.execute(select(tenants).order_by(tenants.c.tenant_id))).mappings().all()
        return [_to_tenant(row) for row in rows]

    async def set_suspended(self, tenant_id: str, at: datetime | None) -> bool:
        """Suspend (at `at`) or reactivate (None); False when there is no such tenant."""
        if at is None:
            values: dict[str, Any] = {"status": TenantStatus.ACTIVE.value, "suspended_at": None}
        else:
            values = {"status": TenantStatus.SUSPENDED.value, "suspended_at": require_aware(at, "at")}
        statement = update(tenants).where(tenants.c.tenant_id == tenant_id).values(**values)
        return await changed_rows(self._engine, statement) == 1

    async def delete(self, tenant_id: str) -> bool:
        return await changed_rows(self._engine, delete(tenants).where(tenants.c.tenant_id == tenant_id)) == 1


def _routes(tenant: Tenant) -> tuple[tuple[str, str | int | None], ...]:
    config = tenant.config
    return (
        ("api_subdomain", config.api_subdomain),
        ("cli_prefix", config.cli_prefix),
        ("mcp_port", config.mcp_port),
    )


async def _refuse_taken(connection: AsyncConnection, tenant: Tenant) -> None:
    id_query = select(tenants.c.tenant_id).where(tenants.c.tenant_id == tenant.tenant_id)
    if (await connection.execute(id_query)).first() is not None:
        raise ConfigurationError(f"A tenant with id {tenant.tenant_id!r} already exists.")
    for name, value in _routes(tenant):
        if value is None:
            continue
        query = select(tenants.c.tenant_id).where(tenants.c[name] == value)
        if (await connection.execute(query)).first() is not None:
            raise ConfigurationError(f"The {name} {value!r} is already another tenant's.")


def _to_row(tenant: Tenant) -> dict[str, Any]:
    suspended_at = tenant.suspended_at
    return {
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "config": dump_object(tenant.config.to_mapping(), "Tenant.config"),
        "status": TenantStatus(tenant.status).value,
        "created_at": require_aware(tenant.created_at, "created_at"),
        "suspended_at": None if suspended_at is None else require_aware(suspended_at, "suspended_at"),
        **dict(_routes(tenant)),
    }


def _to_tenant(row: Any) -> Tenant:
    return Tenant(
        tenant_id=row["tenant_id"],
        name=row["name"],
        config=TenantConfig.from_mapping(json.loads(row["config"])),
        created_at=row["created_at"],
        status=TenantStatus(row["status"]),
        suspended_at=row["suspended_at"],
    )
