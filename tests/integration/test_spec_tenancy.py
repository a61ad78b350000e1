"""The source document's tenancy blocks, run as written against the real PostgreSQL.

"Tenant Isolation Configuration" builds the manager, the production app and the first tenant
(strict isolation: the tenant gets its own role and schema); a second tenant is added the same way.
The database administrator's part, which the document leaves out, is done here with plain SQL:
each tenant's `<tenant>_database`, holding the tenant's schema owned by the tenant's role, with
rows of its own. "Tenant-Aware Workflows" then registers its workflow; its SQL node, run for each
tenant on each channel, reads that tenant's rows and nothing else. The document's code node calls
helpers the document never defines (`apply_standard_processing`, ...): the run says so precisely.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from tests.conftest import POSTGRES_HOST, POSTGRES_PORT

from nexus import create_production_nexus
from nexus.core.types import Channel, Outcome
from nexus.enterprise.tenancy import TenantManager
from nexus.testing import client_for
from nexus.testing.clients import TenantAddress
from nexus.workflow.builder import WorkflowBuilder

pytestmark = [pytest.mark.postgres]
SPEC = Path(__file__).resolve().parents[1] / "spec"
FIRST, SECOND = "enterprise_client_001", "enterprise_client_002"
SUBDOMAINS = {FIRST: "client001", SECOND: "client002"}
ROLE_PREFIX = "nexus_tenant_"


async def run_block(name: str, namespace: dict[str, Any]) -> None:
    """Run a copied block as a module body would run, top-level `await` included."""
    path = SPEC / name
    code = compile(path.read_text(), str(path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    outcome = eval(code, namespace)  # noqa: S307  # the document's own code, by design
    if inspect.iscoroutine(outcome):
        await outcome


async def sql(statement: str, *, database: str = "test", role: str | None = None) -> None:
    connection = await asyncpg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", database=database
    )
    try:
        if role is not None:
            await connection.execute(f'SET ROLE "{role}"')
        await connection.execute(statement)
    finally:
        await connection.close()


async def drop_tenant_databases() -> None:
    for tenant in (FIRST, SECOND):
        await sql(f'DROP DATABASE IF EXISTS "{tenant}_database" WITH (FORCE)')


async def prepare_tenant_database(tenant: str) -> None:
    """What a database administrator does for a tenant whose workflows name `<tenant>_database`."""
    database, role = f"{tenant}_database", f"{ROLE_PREFIX}{tenant}"
    await sql(f'CREATE DATABASE "{database}"')
    await sql(
        f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC; GRANT CONNECT ON DATABASE "{database}" TO "{role}"'
    )
    await sql(f'CREATE SCHEMA "{tenant}" AUTHORIZATION "{role}"', database=database)
    table = f'"{tenant}".customer_data'
    rows = f"(1, '{tenant} first customer'), (2, '{tenant} second customer')"
    await sql(
        f"CREATE TABLE {table} (id integer PRIMARY KEY, name text NOT NULL)", database=database, role=role
    )
    await sql(f"INSERT INTO {table} VALUES {rows}", database=database, role=role)  # noqa: S608  # fixed test rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture
async def clean() -> AsyncIterator[None]:
    await drop_tenant_databases()
    yield
    await drop_tenant_databases()


async def test_the_documents_tenancy_blocks_run_against_postgresql(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, clean: None
) -> None:
    monkeypatch.setenv("NEXUS_STATE_URL", postgres_url)
    monkeypatch.setenv("NEXUS_BASE_DOMAIN", "api.company.com")  # tenant1.api.company.com, as the block says
    monkeypatch.setenv("NEXUS_API_PORT", "0")
    monkeypatch.setenv("NEXUS_MCP_PORT", "0")
    namespace: dict[str, Any] = {
        "__name__": "tenant_blocks",
        "create_production_nexus": create_production_nexus,
    }

    await run_block("tenant_isolation.py", namespace)
    nexus, manager = namespace["nexus"], namespace["tenant_manager"]
    assert isinstance(manager, TenantManager)
    assert manager.isolation_level.value == "strict"
    first = await nexus.get_tenant(FIRST)
    assert first is not None
    assert first.name == "Enterprise Client Corp"
    assert first.config.to_mapping() == {
        "api_subdomain": "client001",
        "cli_prefix": "client001",
        "mcp_port": 3001,
        "quota_profile": "enterprise_large",
        "compliance_level": "hipaa_sox",
    }
    await nexus.create_tenant(
        tenant_id=SECOND,
        name="Second Client Ltd",
        config={
            "api_subdomain": "client002",
            "cli_prefix": "client002",
            "mcp_port": _free_port(),
            "quota_profile": "enterprise_large",
            "compliance_level": "gdpr",
        },
    )
    for tenant in (FIRST, SECOND):
        await prepare_tenant_database(tenant)

    await run_block("tenant_aware_workflows.py", namespace)
    # The block's own SQL and assignment nodes, without the code node whose helpers it never
    # defines: what each tenant's run reads.
    built = namespace["tenant_workflow"].build()
    probe = WorkflowBuilder()
    for node_id in ("assign_tenant", "tenant_data"):
        node = built.nodes[node_id]
        probe.add_node(type(node).__name__, node_id, dict(node.config))
    nexus.register_workflow("tenant_customers", probe.build(), tenant_scoped=True)
    keys = {
        tenant: (await nexus.create_api_key(f"{tenant}-key", tenants=[tenant])).plaintext
        for tenant in SUBDOMAINS
    }

    server = await asyncio.to_thread(nexus.start_in_thread)
    try:
        mcp_base = server.mcp_url.removesuffix("/mcp")
        for channel in Channel:
            for tenant, subdomain in SUBDOMAINS.items():
                other = SECOND if tenant == FIRST else FIRST
                address = TenantAddress(
                    host=f"{subdomain}.api.company.com",
                    prefix=subdomain,
                    mcp_url=f"{mcp_base}/t/{tenant}/mcp",
                )
                client = client_for(channel, server.api_url, server.mcp_url, keys[tenant], tenant=address)
                reply = await client.execute("tenant_customers", {"customer_id": 1})
                assert reply.ok, (channel, tenant, reply)
                outputs = reply.body["outputs"]
                assert outputs["assign_tenant"]["tenant_id"] == tenant
                assert outputs["tenant_data"]["rows"] == [{"id": 1, "name": f"{tenant} first customer"}]

                smuggled = await client.execute("tenant_customers", {"customer_id": 1, "tenant_id": other})
                assert smuggled.outcome is Outcome.INVALID_INPUT, smuggled

                foreign = client_for(channel, server.api_url, server.mcp_url, keys[other], tenant=address)
                refused = await foreign.execute("tenant_customers", {"customer_id": 1})
                assert refused.outcome is Outcome.NOT_FOUND, refused

                document = await client.execute(
                    "tenant_data_processing", {"customer_id": 1, "data": {"id": 1}}
                )
                assert document.outcome is Outcome.FAILED, document
                assert "apply_" in str(document.body)  # the document's undefined helper, named
    finally:
        await asyncio.to_thread(server.stop)
        await drop_tenant_databases()
        for tenant in (FIRST, SECOND):
            await nexus.delete_tenant(tenant)
