"""`storage_mb` on the real PostgreSQL: the measured size of a tenant's schema (strict isolation).

A tenant whose profile allows 1 MB grows its table past it; from then on every write is refused on
each channel (429 / exit 75 / MCP tool error, with a retry hint) while reads still answer, and
another tenant writes on undisturbed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.enterprise.tenancy import TenantManager
from nexus.testing import client_for
from nexus.testing.clients import Reply, TenantAddress
from nexus.workflow.builder import WorkflowBuilder

pytestmark = [pytest.mark.postgres]
BASE = "api.test"
WRITES = {
    "make_table": ("CREATE TABLE blobs (id integer, body text)", "none"),
    # About 1.5 MB of rows that do not compress (TOAST would shrink a repeated string).
    "grow": (
        "INSERT INTO blobs SELECT g, md5(g::text || random()::text) FROM generate_series(1, 20000) g",
        "none",
    ),
    "add_one": ("INSERT INTO blobs VALUES (0, 'one more')", "none"),
}
READS = {"count": ("SELECT count(*) AS n FROM blobs", "one")}


@dataclass
class Site:
    server: RunningNexus
    keys: dict[str, str]

    async def run(self, channel: Channel, tenant: str, workflow: str) -> Reply:
        mcp = self.server.mcp_url.removesuffix("/mcp")
        address = TenantAddress(host=f"{tenant}.{BASE}", prefix=tenant, mcp_url=f"{mcp}/t/{tenant}/mcp")
        client = client_for(
            channel, self.server.api_url, self.server.mcp_url, self.keys[tenant], tenant=address
        )
        return await client.execute(workflow, {})


@pytest_asyncio.fixture
async def site(postgres_url: str) -> AsyncIterator[tuple[Site, str, str]]:
    app = Nexus(api_port=0, mcp_port=0, state_url=postgres_url, enable_auth=True)
    app.tenancy.manager = TenantManager(isolation_level="strict", quota_profiles={"small": {"storage_mb": 1}})
    app.tenancy.base_domain = BASE
    app.tenancy.routing = {"mcp": "path"}
    app.tenancy.storage_refresh_seconds = 0.2
    for name, (query, fetch) in {**WRITES, **READS}.items():
        builder = WorkflowBuilder()
        node: dict[str, Any] = {"connection_string": postgres_url, "query": query, "fetch": fetch}
        builder.add_node("AsyncSQLDatabaseNode", "sql", {**node, "tenant_isolation": True})
        app.register_workflow(name, builder.build(), tenant_scoped=True)
    suffix = uuid.uuid4().hex[:8]
    small, roomy = f"small{suffix}", f"roomy{suffix}"
    await app.create_tenant(
        small, "Small", {"api_subdomain": small, "cli_prefix": small, "quota_profile": "small"}
    )
    await app.create_tenant(roomy, "Roomy", {"api_subdomain": roomy, "cli_prefix": roomy})
    keys = {t: (await app.create_api_key(f"{t}-key", tenants=[t])).plaintext for t in (small, roomy)}
    server = await asyncio.to_thread(app.start_in_thread)
    try:
        yield Site(server, keys), small, roomy
    finally:
        await asyncio.to_thread(server.stop)
        for tenant in (small, roomy):
            await app.delete_tenant(tenant)


async def test_writes_past_storage_mb_are_refused_on_every_channel_and_reads_go_on(
    site: tuple[Site, str, str],
) -> None:
    world, small, roomy = site
    for tenant in (small, roomy):
        assert (await world.run(Channel.API, tenant, "make_table")).ok
        assert (await world.run(Channel.API, tenant, "grow")).ok  # under the limit when it began

    # The size is measured at most every 0.2 s: within a few writes the gate knows it is full.
    refused: Reply | None = None
    for _ in range(20):
        reply = await world.run(Channel.API, small, "add_one")
        if not reply.ok:
            refused = reply
            break
        await asyncio.sleep(0.3)
    assert refused is not None, "writes past storage_mb were never refused"
    for channel in Channel:
        reply = refused if channel is Channel.API else await world.run(channel, small, "add_one")
        assert reply.outcome is Outcome.RATE_LIMITED, (channel, reply)
        assert reply.code == "quota_exceeded"
        assert "storage_mb" in str(reply.body)
        assert reply.retry_after is not None
        read = await world.run(channel, small, "count")
        assert read.ok, (channel, read)
        assert (await world.run(channel, roomy, "add_one")).ok  # the other tenant writes on
