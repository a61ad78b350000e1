"""MCP routing by port offset: each tenant's own listener at its `mcp_port`, following the registry.

Tenants a and b listen on free loopback ports; a's credential works on a's port and is refused on
b's. Tenants created or deleted through the serving app open or close their listener at once; ones
created or deleted by another process (a second `Nexus` on the same SQLite file) within
`refresh_seconds`. A port held by another program refuses the tenant here, and is only warned
about (and retried) when the tenant came from elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio

from nexus import Nexus, RunningNexus
from nexus.core.types import Outcome
from nexus.enterprise.tenancy import TenantManager
from nexus.errors import ConfigurationError
from nexus.testing.clients import McpClient, Reply
from nexus.workflow.builder import WorkflowBuilder

REFRESH_S = 0.2
WAIT_S = 10.0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def is_listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def build(state_url: str, *, mcp_routing: str = "port_offset") -> Nexus:
    app = Nexus(api_port=0, mcp_port=0, state_url=state_url, enable_auth=True)
    app.tenancy.manager = TenantManager(isolation_level="moderate")
    app.tenancy.base_domain = "api.test"
    app.tenancy.routing = {"api": "subdomain", "cli": "prefix", "mcp": mcp_routing}
    app.tenancy.refresh_seconds = REFRESH_S
    whoami = WorkflowBuilder()
    whoami.add_input("note", str, required=False, default="")
    whoami.add_node("PythonCodeNode", "who", {"code": "result = {'tenant': tenant_context['tenant_id']}"})
    app.register_workflow("whoami", whoami.build(), tenant_scoped=True)
    platform = WorkflowBuilder()
    platform.add_node("PythonCodeNode", "ops", {"code": "result = 'platform'"})
    app.register("platform_ops", platform.build())
    return app


async def eventually(check: Callable[[], bool], what: str) -> float:
    """Seconds until `check()` holds (at most WAIT_S)."""
    started = asyncio.get_running_loop().time()
    while not check():
        assert asyncio.get_running_loop().time() - started < WAIT_S, f"not within {WAIT_S} s: {what}"
        await asyncio.sleep(0.02)
    return asyncio.get_running_loop().time() - started


def tenant_of(reply: Reply) -> str:
    assert reply.ok, reply
    result: str = reply.body["outputs"]["who"]["result"]["tenant"]
    return result


@dataclass
class World:
    app: Nexus
    server: RunningNexus
    state_url: str
    ports: dict[str, int]
    keys: dict[str, str]

    def mcp(self, tenant: str, key: str) -> McpClient:
        return McpClient(self.server.tenant_mcp_url(tenant), self.keys[key])

    def other_node(self) -> Nexus:
        """Another process's app on the same registry (here: another `Nexus`, never served)."""
        return build(self.state_url)


async def setup_world(tmp_path: Path, **options: Any) -> tuple[Nexus, str, dict[str, int], dict[str, str]]:
    state_url = f"sqlite:///{tmp_path}/tenancy.db"
    app = build(state_url, **options)
    ports = {"a": free_port(), "b": free_port()}
    for tenant, port in ports.items():
        await app.create_tenant(tenant, f"Tenant {tenant}", {"api_subdomain": tenant, "mcp_port": port})
    keys = {
        tenant: (await app.create_api_key(f"{tenant}-key", tenants=[tenant])).plaintext for tenant in ports
    }
    keys["platform"] = (await app.create_api_key("ops-key")).plaintext
    return app, state_url, ports, keys


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """Served on this test's event loop, so tenants created through `app` go through the live app."""
    app, state_url, ports, keys = await setup_world(tmp_path)
    async with app.serving() as server:
        yield World(app, server, state_url, ports, keys)


async def test_each_tenant_port_serves_that_tenants_tools(world: World) -> None:
    assert dict(world.server.tenant_ports) == world.ports
    assert world.server.tenant_mcp_url("a") == f"http://127.0.0.1:{world.ports['a']}/mcp"
    listing = await world.mcp("a", "a").list_workflows()
    assert listing.ok, listing
    assert [tool["name"] for tool in listing.body["workflows"]] == ["whoami"]
    assert tenant_of(await world.mcp("a", "a").execute("whoami", {})) == "a"
    assert tenant_of(await world.mcp("b", "b").execute("whoami", {})) == "b"


async def test_a_tenant_credential_on_another_tenants_port_is_refused_and_audited(world: World) -> None:
    for reply in (
        await world.mcp("b", "a").execute("whoami", {}),
        await world.mcp("b", "a").list_workflows(),
        await world.mcp("a", "platform").execute("whoami", {}),
    ):
        assert reply.outcome is Outcome.NOT_FOUND, reply
        assert reply.code == "tenant_not_found"
    records = await world.app.audit_log(limit=50)
    attacked = [r for r in records if r.tenant_id == "b" and r.outcome is Outcome.NOT_FOUND]
    assert attacked, "the refused attempt on b's port is in b's audit trail"
    assert any("not a member of tenant b" in (r.reason or "") for r in attacked)


async def test_a_tenant_port_serves_only_the_mcp_path_and_its_metadata(world: World) -> None:
    base = f"http://127.0.0.1:{world.ports['a']}"
    async with httpx2.AsyncClient(base_url=base, timeout=10) as http:
        for path in ("/", "/workflows", "/health", "/t/b/mcp", "/t/a/mcp", "/mcp/", "/.well-known/x"):
            answer = await http.get(path)
            assert answer.status_code == 404, (path, answer.status_code)
        metadata = await http.get("/.well-known/oauth-protected-resource/mcp")
        assert metadata.status_code == 200
        assert metadata.json()["resource"] == f"{base}/mcp"
        assert metadata.json()["authorization_servers"] == [world.server.api_url]
        refused = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert refused.status_code == 401
        challenge = refused.headers["www-authenticate"]
        assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in challenge


async def test_a_suspended_tenant_keeps_its_listener_and_every_call_is_refused(world: World) -> None:
    assert await world.app.suspend_tenant("a")
    assert world.server.tenant_ports["a"] == world.ports["a"]
    reply = await world.mcp("a", "a").execute("whoami", {})
    assert reply.code == "tenant_suspended", reply
    assert await world.app.resume_tenant("a")
    assert tenant_of(await world.mcp("a", "a").execute("whoami", {})) == "a"


async def test_a_tenant_created_while_serving_listens_at_once_and_stops_when_deleted(world: World) -> None:
    port = free_port()
    await world.app.create_tenant("c", "Tenant c", {"mcp_port": port})
    assert world.server.tenant_ports["c"] == port  # on return, not at the next refresh
    key = (await world.app.create_api_key("c-key", tenants=["c"])).plaintext
    assert tenant_of(await McpClient(world.server.tenant_mcp_url("c"), key).execute("whoami", {})) == "c"
    assert await world.app.delete_tenant("c")
    assert "c" not in world.server.tenant_ports
    assert not is_listening(port)
    with pytest.raises(ConfigurationError, match="no MCP listener for tenant 'c'"):
        world.server.tenant_mcp_url("c")


async def test_a_port_held_by_another_program_refuses_the_tenant_here(world: World) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"mcp_port {port} of tenant 'c' is taken"):
            await world.app.create_tenant("c", "Tenant c", {"mcp_port": port})
    assert await world.app.get_tenant("c") is None
    assert "c" not in world.server.tenant_ports


@pytest.mark.parametrize("which", ["api", "mcp"])
async def test_a_tenant_port_equal_to_the_apps_own_port_is_refused(world: World, which: str) -> None:
    own = world.server.api_port if which == "api" else world.server.mcp_port
    with pytest.raises(ConfigurationError, match=f"mcp_port {own} is this app's own API or MCP port"):
        await world.app.create_tenant("c", "Tenant c", {"mcp_port": own})
    assert await world.app.get_tenant("c") is None


async def test_a_port_already_routed_to_another_tenant_is_refused_by_the_registry(world: World) -> None:
    with pytest.raises(ConfigurationError):
        await world.app.create_tenant("c", "Tenant c", {"mcp_port": world.ports["a"]})
    assert world.server.tenant_ports["a"] == world.ports["a"]
    assert tenant_of(await world.mcp("a", "a").execute("whoami", {})) == "a"


async def test_tenants_made_by_another_process_get_and_lose_listeners_within_refresh(world: World) -> None:
    other = world.other_node()
    port = free_port()
    await other.create_tenant("d", "Tenant d", {"mcp_port": port})
    opened_after = await eventually(lambda: world.server.tenant_ports.get("d") == port, "d's listener opens")
    # refresh_seconds plus the follower's poll (a quarter of it), with room for a loaded machine.
    assert opened_after < REFRESH_S * 1.25 + 1.0
    key = (await other.create_api_key("d-key", tenants=["d"])).plaintext
    assert tenant_of(await McpClient(world.server.tenant_mcp_url("d"), key).execute("whoami", {})) == "d"
    assert await other.delete_tenant("d")
    closed_after = await eventually(lambda: "d" not in world.server.tenant_ports, "d's listener closes")
    assert closed_after < REFRESH_S * 1.25 + 1.0
    assert not is_listening(port)


async def test_a_port_held_elsewhere_is_warned_about_and_taken_once_free(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nexus.listener")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        await world.other_node().create_tenant("e", "Tenant e", {"mcp_port": port})
        await eventually(
            lambda: any("'e'" in r.getMessage() and str(port) in r.getMessage() for r in caplog.records),
            "a warning naming tenant e and its port",
        )
        assert "e" not in world.server.tenant_ports
        assert tenant_of(await world.mcp("a", "a").execute("whoami", {})) == "a"  # serving goes on
    finally:
        holder.close()
    await eventually(lambda: world.server.tenant_ports.get("e") == port, "e's listener opens once free")


async def test_path_routing_opens_no_tenant_listeners_and_refuses_ports_nothing_would_serve(
    tmp_path: Path,
) -> None:
    app = build(f"sqlite:///{tmp_path}/tenancy.db", mcp_routing="path")
    port = free_port()
    with pytest.raises(ConfigurationError, match="nothing would listen on it"):
        await app.create_tenant("a", "Tenant a", {"api_subdomain": "a", "mcp_port": port})
    await app.create_tenant("a", "Tenant a", {"api_subdomain": "a"})
    key = (await app.create_api_key("a-key", tenants=["a"])).plaintext
    async with app.serving() as server:
        assert dict(server.tenant_ports) == {}
        assert not is_listening(port)
        via_path = McpClient(server.mcp_url.removesuffix("/mcp") + "/t/a/mcp", key)
        assert tenant_of(await via_path.execute("whoami", {})) == "a"


async def test_a_server_in_its_own_thread_follows_tenants_and_frees_their_ports_on_stop(
    tmp_path: Path,
) -> None:
    app, _, ports, keys = await setup_world(tmp_path)
    server = await asyncio.to_thread(app.start_in_thread)
    try:
        assert dict(server.tenant_ports) == ports
        client = McpClient(server.tenant_mcp_url("a"), keys["a"])
        assert tenant_of(await client.execute("whoami", {})) == "a"
        # From this loop, not the serving one: the app works on the registry like another node.
        f_port = free_port()
        await app.create_tenant("f", "Tenant f", {"mcp_port": f_port})
        await eventually(lambda: server.tenant_ports.get("f") == f_port, "f's listener opens")
        assert await app.delete_tenant("a")
        await eventually(lambda: "a" not in server.tenant_ports, "a's listener closes")
        # No child process (the SQLite audit appender) keeps the port open after the app closed it.
        assert not is_listening(ports["a"])
    finally:
        await asyncio.to_thread(server.stop)
    assert dict(server.tenant_ports) == {}
    for port in (ports["b"], f_port):
        assert not is_listening(port)


async def test_tenants_administered_over_rest_get_and_lose_their_listener_at_once(world: World) -> None:
    """The admin API goes through the same runtime as the Python API: reserve, listen, close."""
    headers = {"authorization": f"Bearer {world.keys['platform']}"}
    async with httpx2.AsyncClient(base_url=world.server.api_url, headers=headers, timeout=10) as http:
        port = free_port()
        made = await http.post(
            "/admin/tenants", json={"tenant_id": "d", "name": "D", "config": {"mcp_port": port}}
        )
        assert made.status_code == 201, made.text
        assert world.server.tenant_ports["d"] == port
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            taken = holder.getsockname()[1]
            refused = await http.post(
                "/admin/tenants", json={"tenant_id": "e", "name": "E", "config": {"mcp_port": taken}}
            )
        assert refused.status_code == 422, refused.text
        assert f"mcp_port {taken} of tenant 'e' is taken" in refused.json()["detail"]
        gone = await http.delete("/admin/tenants/d")
        assert gone.status_code == 200, gone.text
        assert "d" not in world.server.tenant_ports
        assert not is_listening(port)
