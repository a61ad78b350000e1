"""`cross_tenant_policies["data_sharing"]` on the real PostgreSQL (strict isolation).

False: no tenant reads another's tables, and nobody can grant it. True: an administrator grants
one tenant read access to another's schema (tables made later included) and takes it back; the
database itself enforces both, through the tenants' own roles.
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
from nexus.errors import ConfigurationError
from nexus.testing import client_for
from nexus.testing.clients import Reply, TenantAddress
from nexus.workflow.builder import WorkflowBuilder

pytestmark = [pytest.mark.postgres]
BASE = "api.test"


@dataclass
class Pair:
    server: RunningNexus
    owner: str
    reader: str
    keys: dict[str, str]

    @property
    def app(self) -> Nexus:
        return self.server.app

    async def run(self, tenant: str, workflow: str, inputs: dict[str, Any] | None = None) -> Reply:
        address = TenantAddress(host=f"{tenant}.{BASE}")
        client = client_for(
            Channel.API, self.server.api_url, self.server.mcp_url, self.keys[tenant], tenant=address
        )
        return await client.execute(workflow, inputs or {})


def build(state_url: str, owner: str, reader: str, *, sharing: bool) -> Nexus:
    app = Nexus(api_port=0, mcp_port=0, state_url=state_url, enable_auth=True)
    app.tenancy.manager = TenantManager(
        isolation_level="strict", cross_tenant_policies={"data_sharing": sharing}
    )
    app.tenancy.base_domain = BASE
    app.tenancy.routing = {"mcp": "path"}
    statements = {
        "make_table": ("CREATE TABLE items (id integer PRIMARY KEY, label text)", "none"),
        "add_item": ("INSERT INTO items VALUES (:id, :label)", "none"),
        "own_items": ("SELECT id, label FROM items ORDER BY id", "all"),
        # The reader names the owner's schema outright: only a grant lets the database answer.
        "owners_items": (f"SELECT id, label FROM {owner}.items ORDER BY id", "all"),  # noqa: S608
    }
    for name, (query, fetch) in statements.items():
        builder = WorkflowBuilder()
        config = {"connection_string": state_url, "query": query, "fetch": fetch, "tenant_isolation": True}
        builder.add_node("AsyncSQLDatabaseNode", "sql", config)
        app.register_workflow(name, builder.build(), tenant_scoped=True)
    return app


@pytest_asyncio.fixture(params=[True, False], ids=["sharing", "no-sharing"])
async def pair(request: pytest.FixtureRequest, postgres_url: str) -> AsyncIterator[Pair]:
    suffix = uuid.uuid4().hex[:8]
    owner, reader = f"own{suffix}", f"read{suffix}"
    app = build(postgres_url, owner, reader, sharing=request.param)
    keys = {}
    for tenant in (owner, reader):
        await app.create_tenant(tenant, tenant.title(), {"api_subdomain": tenant})
        keys[tenant] = (await app.create_api_key(f"{tenant}-key", tenants=[tenant])).plaintext
    server = await asyncio.to_thread(app.start_in_thread)
    try:
        yield Pair(server, owner, reader, keys)
    finally:
        await asyncio.to_thread(server.stop)
        for tenant in (owner, reader):
            await app.delete_tenant(tenant)


async def test_data_is_shared_only_when_the_policy_allows_and_an_admin_grants_it(pair: Pair) -> None:
    owner, reader = pair.owner, pair.reader
    assert (await pair.run(owner, "make_table")).ok
    assert (await pair.run(owner, "add_item", {"id": 1, "label": "owner's"})).ok

    before = await pair.run(reader, "owners_items")
    assert before.outcome is Outcome.FAILED, before
    assert "beyond its tenant's data" in before.body["detail"]

    policy = pair.app.tenancy.manager.policy
    if not policy.data_sharing:
        with pytest.raises(ConfigurationError, match="data_sharing"):
            await pair.app.share_tenant_data(owner, reader)
        assert (await pair.run(reader, "owners_items")).outcome is Outcome.FAILED
        return

    await pair.app.share_tenant_data(owner, reader)
    shared = await pair.run(reader, "owners_items")
    assert shared.ok, shared
    assert shared.body["outputs"]["sql"]["rows"] == [{"id": 1, "label": "owner's"}]
    # Sharing is one way: the owner still cannot read the reader's tables.
    assert (await pair.run(reader, "make_table")).ok
    own_rows = await pair.run(reader, "own_items")
    assert own_rows.ok, own_rows
    assert own_rows.body["outputs"]["sql"]["rows"] == []

    await pair.app.unshare_tenant_data(owner, reader)
    after = await pair.run(reader, "owners_items")
    assert after.outcome is Outcome.FAILED, after


async def test_sharing_needs_two_distinct_known_tenants(pair: Pair) -> None:
    if not pair.app.tenancy.manager.policy.data_sharing:
        # The policy is checked first: nothing about the tenants named is even looked at.
        with pytest.raises(ConfigurationError, match="data_sharing"):
            await pair.app.share_tenant_data(pair.owner, "nobody_here")
        return
    with pytest.raises(ConfigurationError, match="own data"):
        await pair.app.share_tenant_data(pair.owner, pair.owner)
    with pytest.raises(Exception, match="No tenant"):
        await pair.app.share_tenant_data(pair.owner, "nobody_here")
