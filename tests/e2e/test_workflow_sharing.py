"""Sharing a tenant's workflow with another tenant, as operators do it: the admin REST API and the
real `nexus` command, under each `workflow_sharing` policy, on a served app with two tenants.

`report` is registered for acme only. A platform administrator shares it with globex (and takes
it back) on the platform's route; with `workflow_sharing=True` acme's own administrator may share it
from acme's route; with "admin_only" or False that route answers 403. Once shared, globex's callers
run it on REST, the CLI and MCP, in globex's own tenant context; once taken back it is gone again.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio

from nexus import Nexus, RunningNexus
from nexus.core.types import AuditRecord, Channel, Outcome
from nexus.enterprise.auth import RBACManager
from nexus.enterprise.tenancy import TenantManager
from nexus.errors import ConfigurationError, TenantConflictError, TenantNotFoundError
from nexus.testing import client_for
from nexus.testing.clients import ChannelClient, Reply, TenantAddress
from nexus.workflow.builder import WorkflowBuilder

BASE = "api.test"
REFRESH_S = 0.5
WAIT_S = 10.0
CHANNELS = (Channel.API, Channel.CLI, Channel.MCP)
ROLES = {
    "platform_admin": ["*:*:tenants"],
    "tenant_admin": ["*:*:*"],  # a tenant's own administrator: share:tenants included
    "member": ["*:execute:*", "*:read:*"],  # may call and list, never share
}
KEYS = {  # key name -> (roles, tenants)
    "platform": (["platform_admin"], []),
    "acme_admin": (["tenant_admin"], ["acme"]),
    "acme_member": (["member"], ["acme"]),
    "globex_admin": (["tenant_admin"], ["globex"]),
    "globex_user": (["member"], ["globex"]),
}
Sharing = bool | str


def build(state_url: str, sharing: Sharing) -> Nexus:
    app = Nexus(api_port=0, mcp_port=0, state_url=state_url, enable_auth=True)
    app.tenancy.manager = TenantManager(
        isolation_level="moderate", cross_tenant_policies={"workflow_sharing": sharing}
    )
    app.tenancy.base_domain = BASE
    app.tenancy.routing = {"api": "subdomain", "cli": "prefix", "mcp": "path"}
    app.tenancy.refresh_seconds = REFRESH_S
    rbac = RBACManager()
    for role, permissions in ROLES.items():
        rbac.create_role(role, permissions)
    app.set_rbac_manager(rbac)
    for name, tenant in (("report", "acme"), ("ledger", "globex")):
        flow = WorkflowBuilder()
        flow.add_node("PythonCodeNode", "who", {"code": "result = {'tenant': tenant_context['tenant_id']}"})
        app.register_workflow(name, flow.build(), tenant_scoped=True, tenants=[tenant])
    ops = WorkflowBuilder()
    ops.add_node("PythonCodeNode", "ops", {"code": "result = 'platform'"})
    app.register("platform_ops", ops.build())
    return app


@dataclass(frozen=True)
class Answer:
    """An admin call's outcome: the document (or problem document), the HTTP status or exit code."""

    ok: bool
    status: int
    document: dict[str, Any]

    @property
    def code(self) -> str | None:
        return None if self.ok else self.document.get("code")


@dataclass
class World:
    server: RunningNexus
    keys: dict[str, str]
    key_ids: dict[str, str]
    state_url: str
    sharing: Sharing

    @property
    def app(self) -> Nexus:
        return self.server.app

    def client(self, channel: Channel, key: str, tenant: str) -> ChannelClient:
        mcp = self.server.mcp_url.removesuffix("/mcp")
        where = TenantAddress(
            host=f"{tenant}.{BASE}", prefix=f"{tenant}-cli", mcp_url=f"{mcp}/t/{tenant}/mcp"
        )
        return client_for(channel, self.server.api_url, self.server.mcp_url, self.keys[key], tenant=where)

    async def call_report(self, channel: Channel, tenant: str = "globex") -> Reply:
        key = "globex_user" if tenant == "globex" else "acme_member"
        return await self.client(channel, key, tenant).execute("report", {})

    async def rest(
        self, method: str, path: str, key: str, body: Any = None, *, tenant: str | None = None
    ) -> Answer:
        headers = {"authorization": f"Bearer {self.keys[key]}"}
        if tenant is not None:
            headers["host"] = f"{tenant}.{BASE}"
        async with httpx2.AsyncClient(timeout=30) as http:
            answer = await http.request(method, f"{self.server.api_url}{path}", json=body, headers=headers)
        return Answer(answer.is_success, answer.status_code, answer.json())

    async def cli(self, *args: str, key: str, tenant: str | None = None) -> Answer:
        done = await self.run_cli(*args, "--json", key=key, tenant=tenant)
        ok = done.returncode == 0
        return Answer(ok, done.returncode, json.loads(done.stdout if ok else done.stderr))

    async def run_cli(
        self, *args: str, key: str, tenant: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_") or k == "NEXUS_CONFIG_DIR"}
        env["NEXUS_TOKEN"] = self.keys[key]
        on_tenant = ("--tenant", f"{tenant}-cli") if tenant is not None else ()
        command = [sys.executable, "-m", "nexus", "--url", self.server.api_url, *on_tenant, *args]
        return await asyncio.to_thread(
            subprocess.run,  # our own interpreter and console script
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    async def audit(self) -> list[AuditRecord]:
        return await self.app.audit_log(workflow="_tenants", limit=500)


# How each admin channel shares: the platform's route (by tenant id) and a tenant's own route.
PlatformShare = Callable[[World, str, str, bool], Awaitable[Answer]]
TenantShare = Callable[[World, str, str, str, str], Awaitable[Answer]]


async def platform_over_rest(world: World, tenant_id: str, name: str, share: bool) -> Answer:
    return await world.rest(
        "POST" if share else "DELETE", f"/admin/tenants/{tenant_id}/workflows/{name}", "platform"
    )


async def platform_over_cli(world: World, tenant_id: str, name: str, share: bool) -> Answer:
    return await world.cli("tenants", "share" if share else "unshare", tenant_id, name, key="platform")


async def tenant_over_rest(world: World, key: str, own: str, name: str, target: str) -> Answer:
    return await world.rest("POST", f"/tenant/workflows/{name}/share", key, {"tenant_id": target}, tenant=own)


async def tenant_over_cli(world: World, key: str, own: str, name: str, target: str) -> Answer:
    return await world.cli("workflows", "share", name, "--with", target, key=key, tenant=own)


PLATFORM = {"api": platform_over_rest, "cli": platform_over_cli}
TENANT = {"api": tenant_over_rest, "cli": tenant_over_cli}
FORBIDDEN = {"api": 403, "cli": 77}
NOT_FOUND = {"api": 404, "cli": 2}


@pytest_asyncio.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[[Sharing], Awaitable[World]]]:
    running: list[RunningNexus] = []

    async def serve(sharing: Sharing) -> World:
        state_url = f"sqlite:///{tmp_path}/sharing-{len(running)}.db"
        app = build(state_url, sharing)
        for tenant in ("acme", "globex"):
            await app.create_tenant(
                tenant, tenant.title(), {"api_subdomain": tenant, "cli_prefix": f"{tenant}-cli"}
            )
        issued = {
            name: await app.create_api_key(name, roles=roles, tenants=tenants)
            for name, (roles, tenants) in KEYS.items()
        }
        server = await asyncio.to_thread(app.start_in_thread)
        running.append(server)
        keys = {name: key.plaintext for name, key in issued.items()}
        key_ids = {name: key.key.key_id for name, key in issued.items()}
        return World(server, keys, key_ids, state_url, sharing)

    yield serve
    for server in running:
        await asyncio.to_thread(server.stop)


def tenant_of(reply: Reply) -> str:
    assert reply.ok, reply
    tenant: str = reply.body["outputs"]["who"]["result"]["tenant"]
    return tenant


async def assert_served_to_globex(world: World) -> None:
    for channel in CHANNELS:
        assert tenant_of(await world.call_report(channel)) == "globex", channel  # globex's own context
        listing = await world.client(channel, "globex_user", "globex").list_workflows()
        assert listing.ok, listing
        assert [w["name"] for w in listing.body["workflows"]] == ["ledger", "report"], channel


async def assert_not_served_to_globex(world: World) -> None:
    for channel in CHANNELS:
        reply = await world.call_report(channel)
        assert (reply.outcome, reply.code) == (Outcome.NOT_FOUND, "workflow_not_found"), reply
        listing = await world.client(channel, "globex_user", "globex").list_workflows()
        assert [w["name"] for w in listing.body["workflows"]] == ["ledger"], channel


# -- the platform's administrators ---------------------------------------------------------------------


@pytest.mark.parametrize("admin", ["api", "cli"])
@pytest.mark.parametrize("sharing", ["admin_only", True])
async def test_a_platform_administrator_shares_a_workflow_and_takes_it_back_on_every_channel(
    start: Callable[[Sharing], Awaitable[World]], admin: str, sharing: Sharing
) -> None:
    world = await start(sharing)
    await assert_not_served_to_globex(world)

    shared = await PLATFORM[admin](world, "globex", "report", True)

    assert shared.ok, shared.document
    assert shared.document == {
        "workflow": "report",
        "tenant_id": "globex",
        "shared": True,
        "shared_workflows": ["report"],
    }
    await assert_served_to_globex(world)
    assert tenant_of(await world.call_report(Channel.API, "acme")) == "acme"  # still acme's too
    shown = await world.rest("GET", "/admin/tenants/globex", "platform")
    assert shown.document["shared_workflows"] == ["report"]

    unshared = await PLATFORM[admin](world, "globex", "report", False)

    assert unshared.ok, unshared.document
    assert unshared.document == {
        "workflow": "report",
        "tenant_id": "globex",
        "shared": False,
        "shared_workflows": [],
    }
    await assert_not_served_to_globex(world)
    records = [r for r in reversed(await world.audit()) if str(r.action) == "share"]
    assert [(r.outcome, r.reason.rsplit("; ", 1)[-1]) for r in records] == [
        (Outcome.SUCCESS, "shared workflow report with tenant globex"),
        (Outcome.SUCCESS, "unshared workflow report from tenant globex"),
    ]
    assert {(r.channel.value, r.principal_id, r.tenant_id) for r in records} == {
        (admin, f"key:{world.key_ids['platform']}", None)
    }


@pytest.mark.parametrize("admin", ["api", "cli"])
async def test_with_sharing_off_the_platform_administrator_is_refused_too(
    start: Callable[[Sharing], Awaitable[World]], admin: str
) -> None:
    world = await start(False)

    refused = await PLATFORM[admin](world, "globex", "report", True)

    assert (refused.status, refused.code) == (FORBIDDEN[admin], "forbidden"), refused.document
    assert "workflow_sharing'] is False" in refused.document["detail"]
    with pytest.raises(ConfigurationError, match="workflow_sharing'] is False"):
        await world.app.share_workflow("report", "globex")
    reply = await world.call_report(Channel.API)
    assert reply.outcome is Outcome.NOT_FOUND, reply


@pytest.mark.parametrize("admin", ["api", "cli"])
async def test_what_cannot_be_shared_is_refused_with_the_reason(
    start: Callable[[Sharing], Awaitable[World]], admin: str
) -> None:
    world = await start("admin_only")

    unknown_workflow = await PLATFORM[admin](world, "globex", "nothing", True)
    unknown_tenant = await PLATFORM[admin](world, "initech", "report", True)
    platform_workflow = await PLATFORM[admin](world, "globex", "platform_ops", True)
    registered = await PLATFORM[admin](world, "acme", "report", False)

    assert (unknown_workflow.status, unknown_workflow.code) == (NOT_FOUND[admin], "workflow_not_found")
    assert (unknown_tenant.status, unknown_tenant.code) == (NOT_FOUND[admin], "tenant_not_found")
    invalid = 422 if admin == "api" else 2
    assert (platform_workflow.status, platform_workflow.code) == (invalid, "invalid_input")
    assert "not tenant_scoped" in platform_workflow.document["detail"]
    assert (registered.status, registered.code) == (invalid, "invalid_input")
    assert "only a share can be taken back" in registered.document["detail"]
    assert tenant_of(await world.call_report(Channel.API, "acme")) == "acme"


# -- a tenant's own administrators ----------------------------------------------------------------------


@pytest.mark.parametrize("admin", ["api", "cli"])
async def test_a_tenant_administrator_shares_their_tenants_workflow_when_sharing_is_true(
    start: Callable[[Sharing], Awaitable[World]], admin: str
) -> None:
    world = await start(True)

    shared = await TENANT[admin](world, "acme_admin", "acme", "report", "globex")

    assert shared.ok, shared.document
    # The answer says nothing of globex beyond what acme named: not its other shares.
    assert shared.document == {"workflow": "report", "tenant_id": "globex", "shared": True}
    await assert_served_to_globex(world)
    (record,) = [r for r in await world.audit() if str(r.action) == "share"]
    assert (record.outcome, record.tenant_id, record.principal_id) == (
        Outcome.SUCCESS,
        "acme",
        f"key:{world.key_ids['acme_admin']}",
    )
    assert record.reason.endswith("shared workflow report with tenant globex")

    assert (await platform_over_rest(world, "globex", "report", False)).ok
    await assert_not_served_to_globex(world)


@pytest.mark.parametrize("admin", ["api", "cli"])
@pytest.mark.parametrize(
    ("sharing", "says"), [("admin_only", "for platform administrators"), (False, "is False")]
)
async def test_a_tenant_administrator_is_refused_unless_sharing_is_true(
    start: Callable[[Sharing], Awaitable[World]], admin: str, sharing: Sharing, says: str
) -> None:
    world = await start(sharing)

    refused = await TENANT[admin](world, "acme_admin", "acme", "report", "globex")

    assert (refused.status, refused.code) == (FORBIDDEN[admin], "forbidden"), refused.document
    assert says in refused.document["detail"]
    await assert_not_served_to_globex(world)
    (record,) = [r for r in await world.audit() if str(r.action) == "share"]
    assert (record.outcome, record.tenant_id) == (Outcome.FORBIDDEN, "acme")


@pytest.mark.parametrize("admin", ["api", "cli"])
async def test_a_tenant_administrator_shares_only_their_own_workflows_with_tenants_that_exist(
    start: Callable[[Sharing], Awaitable[World]], admin: str
) -> None:
    world = await start(True)
    share = TENANT[admin]

    not_theirs = await share(world, "globex_admin", "globex", "report", "globex")
    unknown = await share(world, "acme_admin", "acme", "report", "initech")
    malformed = await share(world, "acme_admin", "acme", "report", "Not-An-Id")
    not_allowed = await share(world, "acme_member", "acme", "report", "globex")
    not_a_member = await share(world, "globex_admin", "acme", "report", "globex")

    assert (not_theirs.status, not_theirs.code) == (NOT_FOUND[admin], "workflow_not_found")
    for answer, tenant_id in ((unknown, "initech"), (malformed, "Not-An-Id")):
        # Exactly what naming an unknown tenant answers on the platform's admin routes.
        assert (answer.status, answer.code) == (NOT_FOUND[admin], "tenant_not_found"), answer.document
        assert answer.document["detail"] == f"No tenant with id {tenant_id!r}."
    assert (not_allowed.status, not_allowed.code) == (FORBIDDEN[admin], "forbidden")
    assert (not_a_member.status, not_a_member.code) == (NOT_FOUND[admin], "tenant_not_found")
    await assert_not_served_to_globex(world)


async def test_the_tenant_share_route_serves_no_one_on_the_platforms_route(
    start: Callable[[Sharing], Awaitable[World]],
) -> None:
    world = await start(True)

    platform = await world.rest("POST", "/tenant/workflows/report/share", "platform", {"tenant_id": "globex"})
    tenant_key = await world.rest(
        "POST", "/tenant/workflows/report/share", "acme_admin", {"tenant_id": "globex"}
    )
    bad_body = await world.rest(
        "POST", "/tenant/workflows/report/share", "acme_admin", {"tenant": "globex"}, tenant="acme"
    )
    on_admin_route = await world.rest(
        "POST", "/admin/tenants/globex/workflows/report", "acme_admin", tenant="acme"
    )

    assert (platform.status, platform.code) == (403, "forbidden")
    assert "/admin/tenants/{tenant_id}/workflows/{name}" in platform.document["detail"]
    assert (tenant_key.status, tenant_key.code) == (404, "tenant_not_found")
    assert (bad_body.status, bad_body.code) == (422, "invalid_input")
    assert (on_admin_route.status, on_admin_route.code) == (403, "forbidden")
    await assert_not_served_to_globex(world)


async def test_the_cli_says_in_words_what_it_shared_and_shows_it_on_the_tenant(
    start: Callable[[Sharing], Awaitable[World]],
) -> None:
    world = await start(True)

    by_tenant = await world.run_cli(
        "workflows", "share", "report", "--with", "globex", key="acme_admin", tenant="acme"
    )
    shown = await world.run_cli("tenants", "show", "globex", key="platform")
    taken_back = await world.run_cli("tenants", "unshare", "globex", "report", key="platform")
    by_platform = await world.run_cli("tenants", "share", "globex", "report", key="platform")

    assert (by_tenant.returncode, by_tenant.stdout) == (0, "Shared workflow report with tenant globex.\n")
    assert shown.returncode == 0, shown.stderr
    assert "Shared workflows: report" in shown.stdout
    assert (taken_back.returncode, taken_back.stdout) == (
        0,
        "Workflow report is not shared with tenant globex.\n",
    )
    assert (by_platform.returncode, by_platform.stdout) == (0, "Shared workflow report with tenant globex.\n")


# -- the Python API, this node and the others ------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> float:
    started = asyncio.get_running_loop().time()
    while not await check():
        assert asyncio.get_running_loop().time() - started < WAIT_S, f"not within {WAIT_S} s: {what}"
        await asyncio.sleep(0.05)
    return asyncio.get_running_loop().time() - started


async def test_shares_made_in_python_apply_here_at_once_and_on_other_nodes_within_refresh(
    start: Callable[[Sharing], Awaitable[World]],
) -> None:
    world = await start("admin_only")

    tenant = await world.app.share_workflow("report", "globex")

    assert tenant.shared_workflows == frozenset({"report"})
    assert tenant_of(await world.call_report(Channel.API)) == "globex"  # no refresh waited for

    other = build(world.state_url, "admin_only")  # another node on the same registry, not serving
    await other.unshare_workflow("report", "globex")

    async def gone() -> bool:
        return (await world.call_report(Channel.API)).outcome is Outcome.NOT_FOUND

    assert await eventually(gone, "the share taken back on another node") < REFRESH_S + 2.0
    await other.share_workflow("report", "globex")

    async def back() -> bool:
        return (await world.call_report(Channel.API)).ok

    assert await eventually(back, "the share made on another node") < REFRESH_S + 2.0
    with pytest.raises(TenantNotFoundError):
        await world.app.share_workflow("report", "initech")
    with pytest.raises(ConfigurationError, match="No workflow named 'nothing'"):
        await world.app.share_workflow("nothing", "globex")


async def test_a_taken_tenant_id_or_route_is_a_conflict_in_python(
    start: Callable[[Sharing], Awaitable[World]],
) -> None:
    world = await start("admin_only")

    with pytest.raises(TenantConflictError, match="A tenant with id 'acme' already exists"):
        await world.app.create_tenant("acme", "Acme again")
    with pytest.raises(ConfigurationError, match="The cli_prefix 'globex-cli' is already another tenant's"):
        await world.app.create_tenant("initech", "Initech", {"cli_prefix": "globex-cli"})
    assert await world.app.get_tenant("initech") is None
