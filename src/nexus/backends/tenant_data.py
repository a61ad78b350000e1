"""Each tenant's own data in PostgreSQL (the `TenantDataStore` port).

strict: every tenant gets a NOLOGIN role `nexus_tenant_<id>`, granted to the connecting user so
that nodes can `SET LOCAL ROLE` to it, and a schema named `<id>` owned by that role; with
`storage="database"`, that schema lives in a database of its own (`database_name`), which PUBLIC
may not connect to. No other role gets any privilege, so the database itself refuses a statement
run as one tenant that reaches another's tables. `size_bytes` sums the tables (with their indexes
and TOAST) of the tenant's schema, or is `pg_database_size` of its database, which includes the
7-8 MB of catalogs every PostgreSQL database carries. `drop` removes only what is the tenant's: a
schema its role owns, a database the connecting user owns, a role with no powers; a role, schema
or database of the same name that is not the tenant's makes `provision` fail and `drop` leave it.

moderate and basic: tenants share the application's schema, so nothing is provisioned and `drop`
removes nothing (rows keyed by tenant are the application's to delete). `size_bytes` measures a
schema named after the tenant if the application created one, else it is 0: the storage quota
then counts only what such a schema holds.

Roles are cluster-wide: two installations sharing one PostgreSQL cluster must not share tenant ids.
Imports SQLAlchemy and core; no channel.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Literal

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from nexus.backends.sql.engine import (
    STORE_ERRORS,
    create_state_engine,
    describe_failure,
    normalize_url,
    unavailable,
)
from nexus.core.tenancy.context import TenantPlacement
from nexus.core.tenancy.model import IsolationLevel, Tenant
from nexus.errors import ConfigurationError

StorageMode = Literal["schema", "database"]
ROLE_PREFIX: Final = "nexus_tenant_"
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_LONGEST_TENANT_ID = 48
_PG_NAME_MAX = 63
_SHARED_DATABASES: Final = frozenset({"postgres", "template0", "template1"})
# Concurrent CREATE ROLE / DATABASE of one name: the loser sees duplicate_object/_database or a
# unique violation on the catalog, depending on timing.
_ALREADY_THERE: Final = frozenset({"42710", "42P04", "23505"})
_SCHEMA_SIZE = text(
    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = :schema AND c.relkind IN ('r', 'm', 'S')"
)
_DATABASE_SIZE = text("SELECT pg_database_size(datname) FROM pg_database WHERE datname = :database")
_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('nexus.tenant_data'), hashtext(:tenant))")


class PostgresTenantData:
    """Tenants' data under one isolation level, in the PostgreSQL database at `url`.

    `url` is where tenants' schemas live (`storage="schema"`), or the database from which
    per-tenant databases are created (`storage="database"`, strict only). `database_name` names a
    tenant's database, with `{tenant_id}` standing for its id. The connecting user needs CREATEROLE
    (and CREATEDB for per-tenant databases).
    """

    def __init__(
        self,
        url: str | URL,
        isolation: IsolationLevel,
        *,
        storage: StorageMode = "schema",
        database_name: str = "{tenant_id}_database",
    ) -> None:
        parsed = normalize_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise ConfigurationError("Tenants' own data needs PostgreSQL (a postgresql:// URL).")
        if not isinstance(isolation, IsolationLevel):
            raise ConfigurationError(f"isolation must be an IsolationLevel, not {isolation!r}.")
        if storage not in ("schema", "database"):
            raise ConfigurationError(f"storage must be 'schema' or 'database', not {storage!r}.")
        if storage == "database" and isolation is not IsolationLevel.STRICT:
            raise ConfigurationError(
                f"A database per tenant is a form of strict isolation; under {isolation.value} "
                "isolation tenants share one schema."
            )
        if storage == "database":
            _check_database_name(database_name)
        self._url = parsed
        self.isolation = isolation
        self.storage: StorageMode = storage
        self._database_name = database_name
        self._engine = create_state_engine(parsed)
        self._quote = self._engine.dialect.identifier_preparer.quote_identifier

    def placement(self, tenant: Tenant) -> TenantPlacement:
        if self.isolation is not IsolationLevel.STRICT:
            return TenantPlacement(self.isolation)
        tenant_id = tenant.tenant_id
        database = None
        if self.storage == "database":
            database = self._database_name.format(tenant_id=tenant_id)
            if database in _SHARED_DATABASES or database == self._url.database:
                # drop() would remove it: a tenant's database is never one the cluster or Nexus uses.
                raise ConfigurationError(
                    f"Tenant {tenant_id!r} would get database {database!r}, which is not a tenant's to have."
                )
        return TenantPlacement(
            self.isolation, schema=tenant_id, role=ROLE_PREFIX + tenant_id, database=database
        )

    async def provision(self, tenant: Tenant) -> None:
        """Create the tenant's role, schema and (per-tenant storage) database; safe to repeat.

        Raises:
            ConfigurationError: a role, schema or database of that name exists and is not the tenant's.
            DependencyUnavailableError: PostgreSQL refused or could not be reached.
        """
        where = self.placement(tenant)
        if where.role is None or where.schema is None:
            return  # shared schema: nothing of the tenant's own to create
        async with self._failures(tenant, "provisioned"):
            async with self._engine.begin() as connection:
                await connection.execute(_LOCK, {"tenant": tenant.tenant_id})
                await self._ensure_role(connection, where.role)
                if where.database is None:
                    await self._ensure_schema(connection, where.schema, where.role)
            if where.database is not None:
                await self._ensure_database(where.database, where.role)
                async with self._tenant_database(where.database) as connection:
                    await connection.execute(_LOCK, {"tenant": tenant.tenant_id})
                    await connection.execute(text("REVOKE ALL ON SCHEMA public FROM PUBLIC"))
                    await self._ensure_schema(connection, where.schema, where.role)

    async def drop(self, tenant: Tenant) -> None:
        """Remove the tenant's schema (with everything in it), database and role; safe to repeat.

        Under moderate and basic isolation there is nothing of the tenant's own to remove.
        """
        where = self.placement(tenant)
        if where.role is None or where.schema is None:
            return
        quote = self._quote
        async with self._failures(tenant, "dropped"):
            if where.database is not None:
                async with self._engine.connect() as connection:
                    autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                    if await _database_owned_by_us(autocommit, where.database):
                        await autocommit.execute(
                            text(f"DROP DATABASE IF EXISTS {quote(where.database)} WITH (FORCE)")
                        )
            async with self._engine.begin() as connection:
                await connection.execute(_LOCK, {"tenant": tenant.tenant_id})
                if where.database is None and await _schema_owner(connection, where.schema) == where.role:
                    await connection.execute(text(f"DROP SCHEMA {quote(where.schema)} CASCADE"))
                if await _role_is_powerful(connection, where.role) is False:
                    # Grants to the role in this database go first; DROP ROLE refuses while any remain.
                    await connection.execute(text(f"DROP OWNED BY {quote(where.role)}"))
                    await connection.execute(text(f"DROP ROLE {quote(where.role)}"))

    async def grant_read(self, owner: Tenant, reader: Tenant) -> None:
        """Let `reader`'s role read `owner`'s tables, those made later included (data sharing)."""
        await self._set_read(owner, reader, grant=True)

    async def revoke_read(self, owner: Tenant, reader: Tenant) -> None:
        await self._set_read(owner, reader, grant=False)

    async def _set_read(self, owner: Tenant, reader: Tenant, *, grant: bool) -> None:
        mine, theirs = self.placement(owner), self.placement(reader)
        if mine.role is None or mine.schema is None or theirs.role is None:
            raise ConfigurationError(
                "Tenants share data through their own roles: that needs strict isolation."
            )
        if mine.database is not None:
            raise ConfigurationError(
                "Tenants in databases of their own cannot read each other's (PostgreSQL has no "
                "cross-database reads): share data with storage='schema'."
            )
        quote = self._quote
        schema, owner_role, reader_role = quote(mine.schema), quote(mine.role), quote(theirs.role)
        if grant:
            statements = (
                f"GRANT USAGE ON SCHEMA {schema} TO {reader_role}",
                f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader_role}",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_role} IN SCHEMA {schema} "
                f"GRANT SELECT ON TABLES TO {reader_role}",
            )
        else:
            statements = (
                # Quoted identifiers of checked tenant ids only; no value reaches these statements.
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_role} IN SCHEMA {schema} "  # noqa: S608
                f"REVOKE SELECT ON TABLES FROM {reader_role}",
                f"REVOKE SELECT ON ALL TABLES IN SCHEMA {schema} FROM {reader_role}",  # noqa: S608
                f"REVOKE USAGE ON SCHEMA {schema} FROM {reader_role}",
            )
        async with (
            self._failures(owner, "shared" if grant else "unshared"),
            self._engine.begin() as connection,
        ):
            await connection.execute(_LOCK, {"tenant": owner.tenant_id})
            for statement in statements:
                await connection.execute(text(statement))

    async def size_bytes(self, tenant: Tenant) -> int:
        """What the tenant's `storage_mb` counts (see the module docstring), in bytes."""
        where = self.placement(tenant)
        try:
            async with self._engine.connect() as connection:
                if where.database is not None:
                    size = await connection.scalar(_DATABASE_SIZE, {"database": where.database})
                else:
                    size = await connection.scalar(_SCHEMA_SIZE, {"schema": tenant.tenant_id})
        except STORE_ERRORS as exc:
            raise unavailable("The tenant data store is unavailable.", exc) from exc
        return int(size or 0)

    async def close(self) -> None:
        await self._engine.dispose()

    async def _ensure_role(self, connection: AsyncConnection, role: str) -> None:
        powerful = await _role_is_powerful(connection, role)
        if powerful:
            raise ConfigurationError(
                f"A role named {role!r} exists with powers a tenant's role never has; it is not "
                "this tenant's and is left alone."
            )
        if powerful is None:
            try:
                async with connection.begin_nested():
                    await connection.execute(text(f"CREATE ROLE {self._quote(role)} NOLOGIN"))
            except DBAPIError as exc:
                if _sqlstate(exc) not in _ALREADY_THERE:
                    raise
        await connection.execute(text(f"GRANT {self._quote(role)} TO CURRENT_USER"))

    async def _ensure_schema(self, connection: AsyncConnection, schema: str, role: str) -> None:
        owner = await _schema_owner(connection, schema)
        if owner is None:
            await connection.execute(
                text(f"CREATE SCHEMA {self._quote(schema)} AUTHORIZATION {self._quote(role)}")
            )
        elif owner != role:
            raise ConfigurationError(
                f"A schema named {schema!r} exists and belongs to another role; it is not this "
                "tenant's and is left alone."
            )
        await connection.execute(text(f"REVOKE ALL ON SCHEMA {self._quote(schema)} FROM PUBLIC"))

    async def _ensure_database(self, database: str, role: str) -> None:
        quote = self._quote
        async with self._engine.connect() as connection:
            # CREATE DATABASE cannot run inside a transaction.
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            exists = await autocommit.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :database"), {"database": database}
            )
            if exists is None:
                try:
                    await autocommit.execute(text(f"CREATE DATABASE {quote(database)}"))
                except DBAPIError as exc:
                    if _sqlstate(exc) not in _ALREADY_THERE:
                        raise
            if not await _database_owned_by_us(autocommit, database):
                raise ConfigurationError(
                    f"A database named {database!r} exists and belongs to another role; it is not "
                    "this tenant's and is left alone."
                )
            await autocommit.execute(text(f"REVOKE ALL ON DATABASE {quote(database)} FROM PUBLIC"))
            await autocommit.execute(text(f"GRANT CONNECT ON DATABASE {quote(database)} TO {quote(role)}"))

    @asynccontextmanager
    async def _tenant_database(self, database: str) -> AsyncIterator[AsyncConnection]:
        """One transaction in the tenant's database, on a connection that is not pooled."""
        engine: AsyncEngine = create_async_engine(
            self._url.set(database=database), poolclass=NullPool, hide_parameters=True
        )
        try:
            async with engine.begin() as connection:
                yield connection
        finally:
            await engine.dispose()

    @asynccontextmanager
    async def _failures(self, tenant: Tenant, done: str) -> AsyncIterator[None]:
        try:
            yield
        except STORE_ERRORS as exc:
            # Admin-facing: names the PostgreSQL error, never the URL or the statement.
            raise unavailable(
                f"Tenant {tenant.tenant_id!r}'s data could not be {done}: {describe_failure(exc)}", exc
            ) from exc


def _check_database_name(template: str) -> None:
    if not isinstance(template, str) or template.count("{tenant_id}") != 1:
        raise ConfigurationError("database_name must hold '{tenant_id}' exactly once, e.g. '{tenant_id}_db'.")
    bare = template.replace("{tenant_id}", "t")
    longest = len(bare) - 1 + _LONGEST_TENANT_ID
    if _DATABASE_NAME.fullmatch(bare) is None or longest > _PG_NAME_MAX:
        raise ConfigurationError(
            f"database_name {template[:80]!r} must give a lowercase PostgreSQL name (letters, digits, "
            f"'_') of at most {_PG_NAME_MAX} characters for the longest tenant id."
        )


def _sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


async def _schema_owner(connection: AsyncConnection, schema: str) -> str | None:
    owner = await connection.scalar(
        text("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = :schema"),
        {"schema": schema},
    )
    return None if owner is None else str(owner)


async def _role_is_powerful(connection: AsyncConnection, role: str) -> bool | None:
    """Whether the role can log in or holds any attribute a tenant's role never has; None: no such role."""
    found = await connection.execute(
        text(
            "SELECT rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls "
            "OR rolreplication FROM pg_roles WHERE rolname = :role"
        ),
        {"role": role},
    )
    powerful: bool | None = found.scalar_one_or_none()
    return powerful


async def _database_owned_by_us(connection: AsyncConnection, database: str) -> bool:
    owned = await connection.scalar(
        text("SELECT pg_get_userbyid(datdba) = current_user FROM pg_database WHERE datname = :database"),
        {"database": database},
    )
    return bool(owned)
