"""The cross-tenant attack suite: one test body per attack, run on REST, the `nexus` CLI and MCP.

Two tenants (acme, globex) on one served app, each reached the way its channel names tenants:
REST by subdomain under the base domain, the CLI by prefix, MCP by `/t/{tenant}/mcp`. A valid
credential of acme tries globex's routes, unknown routes, the platform's route, smuggles a tenant
id in inputs and headers, and calls while acme is suspended. Every attempt is refused without
leaking anything, and every refusal leaves an audit record with its reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import pytest_asyncio

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.enterprise.tenancy import TenantManager
from nexus.testing import client_for
from nexus.testing.clients import ChannelClient, TenantAddress
from nexus.workflow.builder import WorkflowBuilder

BASE = "api.test"
PASSWORD = "a long enough password"
TENANTS = {"acme": "Acme Corp", "globex": "Globex Inc"}


@dataclass
class World:
    server: RunningNexus
    keys: dict[str, str]  # acme, globex, platform

    @property
    def app(self) -> Nexus:
        return self.server.app

    def address(self, tenant: str) -> TenantAddress:
        mcp = self.server.mcp_url.removesuffix("/mcp")
        return TenantAddress(host=f"{tenant}.{BASE}", prefix=f"{tenant}-cli", mcp_url=f"{mcp}/t/{tenant}/mcp")

    def client(self, channel: Channel, key: str, tenant: str | None) -> ChannelClient:
        where = self.address(tenant) if tenant is not None else None
        return client_for(channel, self.server.api_url, self.server.mcp_url, self.keys[key], tenant=where)


def build(state_url: str) -> Nexus:
    app = Nexus(api_port=0, mcp_port=0, state_url=state_url, enable_auth=True)
    app.auth.password_time_cost = 1
    app.auth.password_memory_kib = 1024
    app.tenancy.manager = TenantManager(isolation_level="moderate")
    app.tenancy.base_domain = BASE
    app.tenancy.routing = {"api": "subdomain", "cli": "prefix", "mcp": "path"}

    whoami = WorkflowBuilder()
    whoami.add_input("note", str, required=False, default="")
    whoami.add_input("tenant_id", str, required=False, default="")
    whoami.add_node(
        "PythonCodeNode",
        "who",
        {
            "code": "result = {'tenant': tenant_context['tenant_id'], "
            "'name': tenant_context['name'], 'said': note}"
        },
    )
    app.register_workflow("whoami", whoami.build(), tenant_scoped=True)

    platform = WorkflowBuilder()
    platform.add_node("PythonCodeNode", "ops", {"code": "result = 'platform'"})
    app.register("platform_ops", platform.build())
    return app


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    app = build(f"sqlite:///{tmp_path}/tenancy.db")
    for tenant, name in TENANTS.items():
        await app.create_tenant(tenant, name, {"api_subdomain": tenant, "cli_prefix": f"{tenant}-cli"})
    keys = {
        tenant: (await app.create_api_key(f"{tenant}-key", tenants=[tenant])).plaintext for tenant in TENANTS
    }
    keys["platform"] = (await app.create_api_key("ops-key")).plaintext
    await app.create_user("dual", PASSWORD, tenants=list(TENANTS))
    server = await asyncio.to_thread(app.start_in_thread)
    try:
        yield World(server, keys)
    finally:
        await asyncio.to_thread(server.stop)


def tenant_of(reply_body: dict) -> str:
    outputs = reply_body["outputs"]
    return outputs["who"]["result"]["tenant"]


async def refusals(app: Nexus, since: int) -> list:
    records = await app.audit_log(limit=500)
    return [r for r in records if r.outcome is not Outcome.SUCCESS][: len(records) - since]


async def test_a_tenant_credential_runs_its_workflows_in_its_own_tenant(
    world: World, channel: Channel
) -> None:
    reply = await world.client(channel, "acme", "acme").execute("whoami", {"note": "hi"})
    assert reply.ok, reply
    assert tenant_of(reply.body) == "acme"
    listing = await world.client(channel, "acme", "acme").list_workflows()
    assert listing.ok, listing
    assert [w["name"] for w in listing.body["workflows"]] == ["whoami"]  # no platform workflow


async def test_another_tenants_route_is_refused_exactly_like_an_unknown_one(
    world: World, channel: Channel
) -> None:
    foreign = await world.client(channel, "acme", "globex").execute("whoami", {})
    unknown = await world.client(channel, "acme", "initech").execute("whoami", {})
    for reply in (foreign, unknown):
        assert reply.outcome is Outcome.NOT_FOUND, reply
        assert reply.code == "tenant_not_found"
    assert foreign.body.get("detail", foreign.body.get("message")) == unknown.body.get(
        "detail", unknown.body.get("message")
    )
    assert "globex" not in str(foreign.body).lower()
    records = await world.app.audit_log(limit=50)
    attacked = [r for r in records if r.tenant_id == "globex" and r.outcome is Outcome.NOT_FOUND]
    assert attacked, "the refused attempt on globex's route is in globex's audit trail"
    assert "not a member of tenant globex" in attacked[0].reason
    assert attacked[0].principal_id.startswith("key:")


async def test_listings_on_another_tenants_route_are_refused_too(world: World, channel: Channel) -> None:
    reply = await world.client(channel, "acme", "globex").list_workflows()
    assert reply.outcome is Outcome.NOT_FOUND, reply


async def test_tenant_and_platform_credentials_stay_on_their_own_routes(
    world: World, channel: Channel
) -> None:
    tenant_on_platform = await world.client(channel, "acme", None).execute("platform_ops", {})
    platform_on_tenant = await world.client(channel, "platform", "acme").execute("whoami", {})
    assert tenant_on_platform.outcome is Outcome.NOT_FOUND, tenant_on_platform
    assert platform_on_tenant.outcome is Outcome.NOT_FOUND, platform_on_tenant
    own = await world.client(channel, "platform", None).execute("platform_ops", {})
    assert own.ok, own
    scoped_on_platform = await world.client(channel, "platform", None).execute("whoami", {})
    assert scoped_on_platform.outcome is Outcome.NOT_FOUND, scoped_on_platform


async def test_a_tenant_id_smuggled_in_inputs_changes_nothing(world: World, channel: Channel) -> None:
    reply = await world.client(channel, "acme", "acme").execute("whoami", {"tenant_id": "globex"})
    assert reply.ok, reply
    assert tenant_of(reply.body) == "acme"
    shaped = await world.client(channel, "acme", "acme").execute(
        "whoami", {"tenant_context": {"tenant_id": "globex"}}
    )
    assert shaped.outcome is Outcome.INVALID_INPUT, shaped  # not a declared input: refused, not used


@pytest.mark.parametrize(
    "headers",
    [
        {"x-nexus-tenant": "globex-cli"},
        {"x-forwarded-host": f"globex.{BASE}"},
        {"x-tenant-id": "globex", "forwarded": f"host=globex.{BASE}"},
    ],
    ids=["cli-prefix-header", "forwarded-host", "tenant-id-header"],
)
async def test_a_tenant_smuggled_in_headers_changes_nothing(
    world: World, channel: Channel, headers: dict
) -> None:
    """Headers that name another tenant count only where that is how the channel routes, and
    never over the route the request actually took."""
    key = {"authorization": f"Bearer {world.keys['acme']}"}
    api, mcp = world.server.api_url, world.server.mcp_url.removesuffix("/mcp")
    async with httpx2.AsyncClient(timeout=30) as http:
        if channel is Channel.API:
            answer = await http.post(
                f"{api}/workflows/whoami/execute",
                json={"inputs": {}},
                headers={**key, **headers, "host": f"acme.{BASE}"},
            )
            assert answer.status_code == 200, answer.text
            assert tenant_of(answer.json()) == "acme"
        elif channel is Channel.CLI:
            # The CLI routes by its prefix alone: Host and the other headers name globex in vain.
            smuggled = {**headers, "host": f"globex.{BASE}", "x-nexus-tenant": "acme-cli"}
            answer = await http.post(
                f"{api}/cli/v1/workflows/whoami/run", json={"params": {}}, headers={**key, **smuggled}
            )
            assert answer.status_code == 200, answer.text
            assert tenant_of(answer.json()) == "acme"
        else:
            client = client_for(
                Channel.MCP,
                api,
                f"{mcp}/t/acme/mcp",
                world.keys["acme"],
                tenant=TenantAddress(mcp_url=f"{mcp}/t/acme/mcp"),
            )
            reply = await client.execute("whoami", {})
            assert reply.ok, reply
            assert tenant_of(reply.body) == "acme"


async def test_a_suspended_tenant_is_refused_on_every_channel_until_resumed(
    world: World, channel: Channel
) -> None:
    app = world.app
    assert await app.suspend_tenant("acme")
    try:
        reply = await world.client(channel, "acme", "acme").execute("whoami", {})
        assert reply.outcome is Outcome.FORBIDDEN, reply
        assert reply.code == "tenant_suspended"
        listing = await world.client(channel, "acme", "acme").list_workflows()
        assert listing.outcome is Outcome.FORBIDDEN, listing
        other = await world.client(channel, "globex", "globex").execute("whoami", {})
        assert other.ok, other  # only the suspended tenant stops
    finally:
        assert await app.resume_tenant("acme")
    again = await world.client(channel, "acme", "acme").execute("whoami", {})
    assert again.ok, again
    records = await app.audit_log(limit=50)
    assert any(r.tenant_id == "acme" and r.error_code == "tenant_suspended" for r in records)


async def test_a_suspended_tenants_stranger_still_learns_nothing(world: World, channel: Channel) -> None:
    await world.app.suspend_tenant("globex")
    try:
        reply = await world.client(channel, "acme", "globex").execute("whoami", {})
        assert reply.outcome is Outcome.NOT_FOUND, reply  # not "suspended": membership comes first
    finally:
        await world.app.resume_tenant("globex")


async def test_audit_records_are_keyed_by_the_tenant_of_the_route(world: World) -> None:
    for tenant in TENANTS:
        reply = await world.client(Channel.API, tenant, tenant).execute("whoami", {})
        assert reply.ok, reply
    records = await world.app.audit_log(workflow="whoami", limit=20)
    assert {r.tenant_id for r in records if r.outcome is Outcome.SUCCESS} == {"acme", "globex"}


async def test_a_deleted_tenant_is_gone_from_every_route(world: World, channel: Channel) -> None:
    await world.app.delete_tenant("globex")
    reply = await world.client(channel, "globex", "globex").execute("whoami", {})
    assert reply.outcome is Outcome.NOT_FOUND, reply


async def session_token(world: World, channel: Channel, tenant: str) -> str:
    """A login on `tenant`'s route for `channel`: its access token, as that channel's client gets it."""
    if channel is Channel.CLI:
        path, headers = "/cli/v1/auth/login", {"x-nexus-tenant": f"{tenant}-cli"}
    else:
        path, headers = "/auth/login", {"host": f"{tenant}.{BASE}"}
    body = {"username": "dual", "password": PASSWORD, "channel": channel.value}
    if channel is Channel.CLI:
        del body["channel"]
    async with httpx2.AsyncClient(base_url=world.server.api_url, timeout=30) as http:
        answer = await http.post(path, json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


async def test_a_session_made_in_one_tenant_is_refused_in_another_it_may_also_enter(
    world: World, channel: Channel
) -> None:
    """session_isolation: the user belongs to both tenants, but a login made on acme's route
    yields tokens for acme only; on globex's route they are refused as not found, and audited."""
    token = await session_token(world, channel, "acme")
    where = world.address("acme")
    here = await client_for(channel, world.server.api_url, world.server.mcp_url, token, tenant=where).execute(
        "whoami", {}
    )
    assert here.ok, here
    assert tenant_of(here.body) == "acme"
    other = world.address("globex")
    elsewhere = await client_for(
        channel, world.server.api_url, world.server.mcp_url, token, tenant=other
    ).execute("whoami", {})
    assert elsewhere.outcome is Outcome.NOT_FOUND, elsewhere
    assert elsewhere.code == "tenant_not_found"
    records = await world.app.audit_log(tenant_id="globex", limit=20)
    assert any("session isolation" in r.reason for r in records if r.outcome is Outcome.NOT_FOUND)
