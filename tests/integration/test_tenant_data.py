"""Tenants' own data on the real PostgreSQL, and the SQL node running as a tenant.

Every tenant id is unique to this run; roles and databases are cluster-wide, so each test removes
what it made (through `drop`, and directly afterwards in case a test failed half-way).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from nexus.backends.tenant_data import PostgresTenantData, StorageMode
from nexus.core.telemetry import SystemClock
from nexus.core.tenancy.context import MIB, StorageGate, TenantContext, TenantPlacement, run_context
from nexus.core.tenancy.model import IsolationLevel, Tenant, TenantConfig
from nexus.errors import (
    ConfigurationError,
    InvalidInputError,
    QuotaExceededError,
    WorkflowDefinitionError,
    WorkflowFailedError,
)
from nexus.nodes.sql import dispose_engines
from nexus.workflow import AsyncLocalRuntime, WorkflowBuilder

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
RUN = secrets.token_hex(3)
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


def new_tenant(label: str, **config: Any) -> Tenant:
    return Tenant(f"t{RUN}{label}{secrets.token_hex(2)}", label.title(), TenantConfig(**config), NOW)


def role_of(tenant: Tenant) -> str:
    return f"nexus_tenant_{tenant.tenant_id}"


@pytest.fixture(autouse=True)
async def release_pools() -> AsyncIterator[None]:
    yield
    await dispose_engines()


async def run_node(
    ctx: TenantContext | None,
    url: str,
    query: str,
    parameters: dict[str, Any] | None = None,
    *,
    fetch: str = "all",
    tenant_isolation: bool = True,
) -> dict[str, Any]:
    config = {"connection_string": url, "query": query, "fetch": fetch, "tenant_isolation": tenant_isolation}
    workflow = WorkflowBuilder().add_node("AsyncSQLDatabaseNode", "q", config).build()
    context = run_context(ctx) if ctx is not None else None
    results, _ = await AsyncLocalRuntime().execute(workflow, parameters, context=context)
    return results["q"]


async def scrub(admin_url: str, tenants: list[Tenant]) -> None:
    """Remove whatever a test left of its tenants, whether or not `drop` ran."""
    await dispose_engines()
    connection = await asyncpg.connect(admin_url)
    try:
        for tenant in tenants:
            tenant_id, role = tenant.tenant_id, role_of(tenant)
            await connection.execute(f'DROP DATABASE IF EXISTS "{tenant_id}_database" WITH (FORCE)')
            await connection.execute(f'DROP SCHEMA IF EXISTS "{tenant_id}" CASCADE')
            if await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await connection.execute(f'DROP OWNED BY "{role}"')
                await connection.execute(f'DROP ROLE "{role}"')
    finally:
        await connection.close()


@dataclass
class Tenants:
    """Tenants provisioned in one test, and how the SQL node reaches their data."""

    store: PostgresTenantData
    node_url: str
    made: list[Tenant] = field(default_factory=list)

    async def add(self, label: str) -> Tenant:
        tenant = new_tenant(label)
        self.made.append(tenant)
        await self.store.provision(tenant)
        return tenant

    def context(self, tenant: Tenant, storage: StorageGate | None = None) -> TenantContext:
        return TenantContext(tenant, self.store.placement(tenant), storage=storage)


@asynccontextmanager
async def strict_tenants(admin_url: str, storage: StorageMode) -> AsyncIterator[Tenants]:
    """A strict store; afterwards every tenant it made is dropped, then scrubbed for good measure."""
    store = PostgresTenantData(admin_url, IsolationLevel.STRICT, storage=storage)
    node_url = admin_url if storage == "schema" else f"{PG_SERVER}/${{tenant_id}}_database"
    tenants = Tenants(store, node_url)
    try:
        yield tenants
    finally:
        await dispose_engines()
        try:
            for tenant in tenants.made:
                await store.drop(tenant)
        finally:
            await store.close()
            await scrub(admin_url, tenants.made)


@pytest.fixture(params=["schema", "database"])
async def strict(request: pytest.FixtureRequest, postgres_database: str) -> AsyncIterator[Tenants]:
    async with strict_tenants(postgres_database, request.param) as tenants:
        yield tenants


async def fill_customers(tenants: Tenants, tenant: Tenant, name: str) -> TenantContext:
    ctx = tenants.context(tenant)
    create = "CREATE TABLE customer_data (id INTEGER PRIMARY KEY, name TEXT)"
    await run_node(ctx, tenants.node_url, create, fetch="none")
    await run_node(
        ctx, tenants.node_url, "INSERT INTO customer_data VALUES (1, :name)", {"name": name}, fetch="none"
    )
    return ctx


SPEC_QUERY = "SELECT * FROM ${tenant_id}.customer_data WHERE id = :customer_id"


@pytest.mark.postgres
async def test_each_strict_tenant_reads_its_own_rows_as_its_own_role(strict: Tenants) -> None:
    a, b = await strict.add("a"), await strict.add("b")
    ctx_a, ctx_b = await fill_customers(strict, a, "alice"), await fill_customers(strict, b, "bob")
    assert (await run_node(ctx_a, strict.node_url, SPEC_QUERY, {"customer_id": 1}))["rows"] == [
        {"id": 1, "name": "alice"}
    ]
    assert (await run_node(ctx_b, strict.node_url, SPEC_QUERY, {"customer_id": 1}))["rows"] == [
        {"id": 1, "name": "bob"}
    ]
    who = "SELECT current_user AS u, current_schema() AS s, current_setting('nexus.tenant_id') AS t"
    assert (await run_node(ctx_a, strict.node_url, who))["rows"] == [
        {"u": role_of(a), "s": a.tenant_id, "t": a.tenant_id}
    ]
    assert ctx_a.accesses == ("q",)
    # SET LOCAL ended with the transaction: the pooled connection is the login user's again.
    plain = await run_node(ctx_a, strict.node_url, "SELECT current_user AS u", tenant_isolation=False)
    assert plain["rows"] == [{"u": "postgres"}]


@pytest.mark.postgres
async def test_the_database_refuses_a_query_naming_another_tenants_schema(strict: Tenants) -> None:
    a, b = await strict.add("a"), await strict.add("b")
    ctx_a = await fill_customers(strict, a, "alice")
    await fill_customers(strict, b, "bob")
    for query, fetch in (
        (f"SELECT * FROM {b.tenant_id}.customer_data", "all"),  # noqa: S608  # the attack under test
        (f"UPDATE {b.tenant_id}.customer_data SET name = 'mallory'", "none"),  # noqa: S608  # likewise
    ):
        with pytest.raises(WorkflowFailedError) as refused:
            await run_node(ctx_a, strict.node_url, query, fetch=fetch)
        assert refused.value.node_id == "q"
        assert refused.value.message.startswith("node 'q' failed: ")
        assert "bob" not in refused.value.message
        if strict.store.storage == "schema":
            assert (
                "permission denied: the statement reaches beyond its tenant's data" in refused.value.message
            )
    ctx_b = strict.context(b)
    assert (await run_node(ctx_b, strict.node_url, SPEC_QUERY, {"customer_id": 1}))["rows"][0][
        "name"
    ] == "bob"


@pytest.mark.postgres
async def test_a_tenants_database_is_the_only_one_its_node_may_name(postgres_database: str) -> None:
    async with strict_tenants(postgres_database, "database") as tenants:
        a, b = await tenants.add("a"), await tenants.add("b")
        await fill_customers(tenants, b, "bob")
        b_database = f"{PG_SERVER}/{b.tenant_id}_database"
        with pytest.raises(WorkflowFailedError, match="lives in a database of its own") as refused:
            await run_node(tenants.context(a), b_database, "SELECT * FROM customer_data")
        assert "bob" not in refused.value.message
        # Even connected to B's database and naming B's schema, A's role may not read it.
        forged = TenantContext(a, TenantPlacement(IsolationLevel.STRICT, schema=b.tenant_id, role=role_of(a)))
        with pytest.raises(WorkflowFailedError, match="permission denied") as denied:
            await run_node(forged, b_database, f"SELECT * FROM {b.tenant_id}.customer_data")  # noqa: S608
        assert "bob" not in denied.value.message


@pytest.mark.postgres
async def test_a_tenant_id_among_the_inputs_is_refused_never_used(strict: Tenants) -> None:
    a, b = await strict.add("a"), await strict.add("b")
    ctx_a = await fill_customers(strict, a, "alice")
    await fill_customers(strict, b, "bob")
    attempts: list[tuple[str, dict[str, Any]]] = [
        (SPEC_QUERY, {"customer_id": 1, "tenant_id": b.tenant_id}),
        (SPEC_QUERY, {"customer_id": 1, "q": {"tenant_id": b.tenant_id}}),
        ("SELECT * FROM customer_data WHERE name <> :tenant_id", {"q": {"params": {"tenant_id": "x"}}}),
        ("SELECT 1 AS one", {"tenant_id": a.tenant_id}),  # even naming its own tenant
    ]
    for query, parameters in attempts:
        with pytest.raises(InvalidInputError, match="input 'tenant_id': refused") as refused:
            await run_node(ctx_a, strict.node_url, query, parameters)
        assert refused.value.detail["errors"][0]["path"] == "tenant_id"
    bound = await run_node(ctx_a, strict.node_url, "SELECT :tenant_id AS t")
    assert bound["rows"] == [{"t": a.tenant_id}]


@pytest.mark.postgres
@pytest.mark.parametrize(
    "context",
    [None, "plain tenant_id", "lookalike dict"],
)
async def test_without_a_tenant_context_the_node_fails_closed(strict: Tenants, context: str | None) -> None:
    a = await strict.add("a")
    fake: dict[str, Any] | None = {
        None: None,
        "plain tenant_id": {"tenant_id": a.tenant_id},
        "lookalike dict": {"tenant_context": {"tenant_id": a.tenant_id}, "tenant_id": a.tenant_id},
    }[context]
    workflow = (
        WorkflowBuilder()
        .add_node(
            "AsyncSQLDatabaseNode",
            "q",
            {"connection_string": strict.node_url, "query": "SELECT 1", "tenant_isolation": True},
        )
        .build()
    )
    with pytest.raises(
        WorkflowFailedError, match="node 'q' failed: tenant_isolation is set and the call has no tenant"
    ):
        await AsyncLocalRuntime().execute(workflow, context=fake)


@pytest.mark.postgres
async def test_past_its_storage_quota_a_tenant_may_read_but_not_write(postgres_database: str) -> None:
    async with strict_tenants(postgres_database, "schema") as tenants:
        a, b = await tenants.add("a"), await tenants.add("b")
        url, grow = tenants.node_url, tenants.context(a)
        await run_node(grow, url, "CREATE TABLE blob (id SERIAL PRIMARY KEY, data TEXT)", fetch="none")
        fill = (
            "INSERT INTO blob (data) SELECT md5(g::text) || md5((g + 1)::text) "
            "FROM generate_series(1, 20000) g"
        )
        await run_node(grow, url, fill, fetch="none")
        assert await tenants.store.size_bytes(a) > MIB
        gate_a, gate_b = (
            StorageGate(t.tenant_id, 1, partial(tenants.store.size_bytes, t), SystemClock(), refresh_s=60)
            for t in (a, b)
        )
        try:
            ctx_a, ctx_b = tenants.context(a, gate_a), tenants.context(b, gate_b)
            write = "INSERT INTO blob (data) VALUES ('one more')"
            with pytest.raises(QuotaExceededError) as refused:
                await run_node(ctx_a, url, write, fetch="none")
            assert refused.value.detail["resource"] == "storage_mb"
            assert refused.value.retry_after >= 1
            with pytest.raises(QuotaExceededError):  # a write that also returns rows is still a write
                await run_node(ctx_a, url, write + " RETURNING id")
            assert ctx_a.accesses == ("q",)
            count = await run_node(ctx_a, url, "SELECT count(*) AS n FROM blob")
            assert count["rows"] == [{"n": 20000}]
            # The other tenant, far under the same limit, writes freely.
            await run_node(ctx_b, url, "CREATE TABLE note (body TEXT)", fetch="none")
            inserted = await run_node(ctx_b, url, "INSERT INTO note VALUES ('hi')", fetch="none")
            assert inserted["row_count"] == 1
        finally:
            await gate_a.close()
            await gate_b.close()


async def leftovers(admin_url: str, tenant: Tenant) -> dict[str, bool]:
    connection = await asyncpg.connect(admin_url)
    try:
        return {
            "role": bool(
                await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role_of(tenant))
            ),
            "schema": bool(
                await connection.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", tenant.tenant_id)
            ),
            "database": bool(
                await connection.fetchval(
                    "SELECT 1 FROM pg_database WHERE datname = $1", f"{tenant.tenant_id}_database"
                )
            ),
        }
    finally:
        await connection.close()


@pytest.mark.postgres
async def test_provision_is_idempotent_and_drop_removes_everything(
    strict: Tenants, postgres_database: str
) -> None:
    a = await strict.add("a")
    await strict.store.provision(a)
    await fill_customers(strict, a, "alice")
    in_database = strict.store.storage == "database"
    assert await leftovers(postgres_database, a) == {
        "role": True,
        "schema": not in_database,
        "database": in_database,
    }
    size = await strict.store.size_bytes(a)
    assert size > 0
    await dispose_engines()
    await strict.store.drop(a)
    assert await leftovers(postgres_database, a) == {"role": False, "schema": False, "database": False}
    await strict.store.drop(a)  # again: nothing left to remove, no error
    assert await strict.store.size_bytes(a) == 0


@pytest.mark.postgres
async def test_nothing_is_granted_to_public_or_other_roles(strict: Tenants, postgres_database: str) -> None:
    a = await strict.add("a")
    placement = strict.store.placement(a)
    database_url = postgres_database if placement.database is None else f"{PG_SERVER}/{placement.database}"
    connection = await asyncpg.connect(database_url)
    try:
        acl = await connection.fetchval(
            "SELECT nspacl::text FROM pg_namespace WHERE nspname = $1", a.tenant_id
        )
        owner = await connection.fetchval(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", a.tenant_id
        )
        public_usage = await connection.fetchval(
            "SELECT has_schema_privilege('public', $1, 'USAGE')", a.tenant_id
        )
        if placement.database is not None:
            connect = await connection.fetchval(
                "SELECT has_database_privilege('public', $1, 'CONNECT')", placement.database
            )
            assert connect is False
    finally:
        await connection.close()
    assert owner == role_of(a)
    assert acl is None or "=" not in acl.replace(f"{role_of(a)}=", "")
    assert public_usage is False


@pytest.mark.postgres
async def test_provision_leaves_alone_a_schema_or_role_that_is_not_the_tenants(
    postgres_database: str,
) -> None:
    store = PostgresTenantData(postgres_database, IsolationLevel.STRICT)
    squatted, powerful = new_tenant("s"), new_tenant("p")
    connection = await asyncpg.connect(postgres_database)
    try:
        await connection.execute(f'CREATE SCHEMA "{squatted.tenant_id}"')
        await connection.execute(f'CREATE ROLE "{role_of(powerful)}" LOGIN')
        with pytest.raises(ConfigurationError, match="belongs to another role"):
            await store.provision(squatted)
        with pytest.raises(ConfigurationError, match="powers a tenant's role never has"):
            await store.provision(powerful)
        await store.drop(squatted)  # not the tenant's: left in place
        assert await connection.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", squatted.tenant_id)
        await store.drop(powerful)
        assert await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role_of(powerful))
    finally:
        await connection.close()
        await store.close()
        await scrub(postgres_database, [squatted, powerful])


@pytest.mark.postgres
async def test_moderate_tenants_share_the_schema_and_rls_can_read_the_tenant(postgres_database: str) -> None:
    store = PostgresTenantData(postgres_database, IsolationLevel.MODERATE)
    a = new_tenant("m")
    try:
        assert store.placement(a) == TenantPlacement(IsolationLevel.MODERATE)
        await store.provision(a)
        assert await leftovers(postgres_database, a) == {"role": False, "schema": False, "database": False}
        assert await store.size_bytes(a) == 0
        ctx = TenantContext(a, store.placement(a))
        seen = await run_node(
            ctx, postgres_database, "SELECT current_setting('nexus.tenant_id') AS t, current_user AS u"
        )
        assert seen["rows"] == [{"t": a.tenant_id, "u": "postgres"}]
        after = await run_node(
            None,
            postgres_database,
            "SELECT current_setting('nexus.tenant_id', true) AS t",
            tenant_isolation=False,
        )
        assert after["rows"][0]["t"] in (None, "")
        # A schema the application made under the tenant's name is what its quota measures.
        await run_node(
            None, postgres_database, f"CREATE SCHEMA {a.tenant_id}", fetch="none", tenant_isolation=False
        )
        await run_node(
            None,
            postgres_database,
            f"CREATE TABLE {a.tenant_id}.t AS SELECT g FROM generate_series(1, 1000) g",  # noqa: S608
            fetch="none",
            tenant_isolation=False,
        )
        assert await store.size_bytes(a) > 0
        await store.drop(a)  # shared data is the application's to delete
        assert (await leftovers(postgres_database, a))["schema"] is True
    finally:
        await store.close()
        await scrub(postgres_database, [a])


@pytest.mark.postgres
async def test_database_mode_measures_the_whole_tenant_database(postgres_database: str) -> None:
    async with strict_tenants(postgres_database, "database") as tenants:
        a = await tenants.add("a")
        connection = await asyncpg.connect(postgres_database)
        try:
            expected = await connection.fetchval("SELECT pg_database_size($1)", f"{a.tenant_id}_database")
        finally:
            await connection.close()
        assert await tenants.store.size_bytes(a) == expected


# Configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kwargs", "problem"),
    [
        ("sqlite:///./x.db", {}, "needs PostgreSQL"),
        (
            f"{PG_SERVER}/test",
            {"isolation": IsolationLevel.MODERATE, "storage": "database"},
            "form of strict",
        ),
        (f"{PG_SERVER}/test", {"storage": "files"}, "must be 'schema' or 'database'"),
        (f"{PG_SERVER}/test", {"storage": "database", "database_name": "tenant_db"}, "exactly once"),
        (
            f"{PG_SERVER}/test",
            {"storage": "database", "database_name": "{tenant_id}_{tenant_id}"},
            "exactly once",
        ),
        (
            f"{PG_SERVER}/test",
            {"storage": "database", "database_name": "{tenant_id}-DB"},
            "lowercase PostgreSQL name",
        ),
        (
            f"{PG_SERVER}/test",
            {"storage": "database", "database_name": "{tenant_id}" + "_x" * 8},
            "at most 63",
        ),
    ],
)
async def test_impossible_settings_are_refused(url: str, kwargs: dict[str, Any], problem: str) -> None:
    settings: dict[str, Any] = {"isolation": IsolationLevel.STRICT, **kwargs}
    isolation = settings.pop("isolation")
    with pytest.raises(ConfigurationError, match=problem):
        PostgresTenantData(url, isolation, **settings)


@pytest.mark.parametrize("tenant_id", ["postgres", "template1", "test"])
async def test_a_tenant_database_never_names_a_shared_one(tenant_id: str) -> None:
    store = PostgresTenantData(
        f"{PG_SERVER}/test", IsolationLevel.STRICT, storage="database", database_name="{tenant_id}"
    )
    try:
        with pytest.raises(ConfigurationError, match="not a tenant's to have"):
            store.placement(Tenant(tenant_id, "X", TenantConfig(), NOW))
    finally:
        await store.close()


# The SQL node's tenancy on SQLite (moderate and basic: no roles there) -----------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"


def shared_context(tenant_id: str = "acme", storage: StorageGate | None = None) -> TenantContext:
    tenant = Tenant(tenant_id, "Acme", TenantConfig(), NOW)
    return TenantContext(tenant, TenantPlacement(IsolationLevel.MODERATE), storage=storage)


async def test_templates_and_binds_named_tenant_id_are_the_calls_tenant(sqlite_url: str) -> None:
    rows = (await run_node(shared_context(), sqlite_url, "SELECT '${tenant_id}' AS t, :tenant_id AS b"))[
        "rows"
    ]
    assert rows == [{"t": "acme", "b": "acme"}]


async def test_strict_isolation_on_sqlite_fails_closed(sqlite_url: str, tmp_path: Path) -> None:
    tenant = Tenant("acme", "Acme", TenantConfig(), NOW)
    ctx = TenantContext(
        tenant, TenantPlacement(IsolationLevel.STRICT, schema="acme", role="nexus_tenant_acme")
    )
    with pytest.raises(WorkflowFailedError, match="strict tenant isolation needs PostgreSQL"):
        await run_node(ctx, sqlite_url, "SELECT 1")
    assert not (tmp_path / "shared.db").exists()


async def test_no_tenant_fails_closed_before_touching_the_database(sqlite_url: str, tmp_path: Path) -> None:
    with pytest.raises(WorkflowFailedError, match="tenant_isolation is set and the call has no tenant"):
        await run_node(None, sqlite_url, "CREATE TABLE t (a INTEGER)", fetch="none")
    assert not (tmp_path / "shared.db").exists()


@pytest.mark.parametrize(
    "config",
    [
        {"tenant_id": "other"},
        {"params": {"tenant_id": "other"}},
        {"tenant_isolation": "yes"},
    ],
)
def test_a_tenant_id_in_config_is_refused_at_build(config: dict[str, Any]) -> None:
    base = {"connection_string": "sqlite://", "query": "SELECT :tenant_id AS t", "tenant_isolation": True}
    with pytest.raises(WorkflowDefinitionError, match=r"node 'q' \(AsyncSQLDatabaseNode\): "):
        WorkflowBuilder().add_node("AsyncSQLDatabaseNode", "q", {**base, **config}).build()


async def test_the_storage_gate_is_asked_for_writes_only(sqlite_url: str) -> None:
    measured: list[int] = []

    async def over_quota() -> int:
        measured.append(1)
        return 2 * MIB

    gate = StorageGate("acme", 1, over_quota, SystemClock(), refresh_s=60)
    ctx = shared_context(storage=gate)
    assert (await run_node(ctx, sqlite_url, "SELECT 'drop table' AS words"))["rows"] == [
        {"words": "drop table"}
    ]
    assert measured == []
    with pytest.raises(QuotaExceededError):
        await run_node(ctx, sqlite_url, "CREATE TABLE t (a INTEGER)", fetch="none")
    with pytest.raises(QuotaExceededError):
        await run_node(ctx, sqlite_url, "SELECT 1 AS one", fetch="none")
    assert measured == [1]
    await gate.close()
