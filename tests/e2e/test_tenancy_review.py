"""Review of issue 5 (multi-tenancy): defects found in the committed code, each pinned by a test
that fails because of it (strict xfail), on one served app with two tenants (moderate isolation,
SQLite state, REST by subdomain, the CLI by prefix, MCP by path).

acme and globex are the tenants; an acme key, a globex key and a platform key exist; alice is a
member of acme. Each test says in its xfail reason exactly what is wrong.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio

from nexus import Nexus, RunningNexus
from nexus.enterprise.tenancy import TenantManager
from nexus.errors import ConfigurationError, TenantConflictError
from nexus.workflow.builder import WorkflowBuilder

BASE = "api.test"
PASSWORD = "correct horse battery staple"
API_REQUESTS_PER_HOUR = 3
CLI_SESSIONS = 1


@dataclass
class World:
    server: RunningNexus
    keys: dict[str, str]

    @property
    def app(self) -> Nexus:
        return self.server.app

    async def send(
        self,
        method: str,
        path: str,
        *,
        tenant: str | None = None,
        key: str | None = None,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx2.Response:
        """One request to the API port; `tenant` names the Host (its subdomain)."""
        sent = dict(headers or {})
        if tenant is not None:
            sent["host"] = f"{tenant}.{BASE}"
        secret = token if token is not None else (self.keys[key] if key is not None else None)
        if secret is not None:
            sent["authorization"] = f"Bearer {secret}"
        async with httpx2.AsyncClient(base_url=self.server.api_url, timeout=30) as http:
            return await http.request(method, path, json=body, headers=sent)

    async def run_rest(self, key: str, tenant: str, workflow: str = "whoami") -> httpx2.Response:
        return await self.send(
            "POST", f"/workflows/{workflow}/execute", tenant=tenant, key=key, body={"inputs": {}}
        )

    async def run_cli(
        self, tenant: str, *, key: str | None = None, token: str | None = None
    ) -> httpx2.Response:
        """What `nexus --tenant <tenant>-cli run whoami` sends."""
        return await self.send(
            "POST",
            "/cli/v1/workflows/whoami/run",
            key=key,
            token=token,
            body={"params": {}},
            headers={"x-nexus-tenant": f"{tenant}-cli"},
        )


def build(state_url: str) -> Nexus:
    app = Nexus(api_port=0, mcp_port=0, state_url=state_url, enable_auth=True, enable_monitoring=True)
    app.auth.password_time_cost = 1
    app.auth.password_memory_kib = 1024
    app.tenancy.manager = TenantManager(
        isolation_level="moderate",
        resource_quotas={"api_requests_per_hour": API_REQUESTS_PER_HOUR, "cli_sessions": CLI_SESSIONS},
    )
    app.tenancy.base_domain = BASE
    app.tenancy.routing = {"api": "subdomain", "cli": "prefix", "mcp": "path"}

    whoami = WorkflowBuilder()
    whoami.add_node("PythonCodeNode", "who", {"code": "result = tenant_context['tenant_id']"})
    app.register_workflow("whoami", whoami.build(), tenant_scoped=True)

    payroll = WorkflowBuilder()
    payroll.add_node("PythonCodeNode", "pay", {"code": "result = 'paid'"})
    app.register_workflow("globex_payroll", payroll.build(), tenant_scoped=True, tenants=["globex"])

    leaky = WorkflowBuilder()
    leaky.add_node("TenantAssignmentNode", "assign", {"tenant_source": "session", "audit_access": True})
    leaky.add_node("PythonCodeNode", "boom", {"code": "raise ValueError('failed after reading')"})
    leaky.add_connection("assign", "tenant_id", "boom", "tid")
    app.register_workflow("read_then_fail", leaky.build(), tenant_scoped=True)

    platform = WorkflowBuilder()
    platform.add_node("PythonCodeNode", "ops", {"code": "result = 'platform'"})
    app.register("platform_ops", platform.build())
    return app


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    app = build(f"sqlite:///{tmp_path}/review.db")
    for tenant in ("acme", "globex"):
        await app.create_tenant(
            tenant, tenant.title(), {"api_subdomain": tenant, "cli_prefix": f"{tenant}-cli"}
        )
    keys = {
        tenant: (await app.create_api_key(f"{tenant}-key", tenants=[tenant])).plaintext
        for tenant in ("acme", "globex")
    }
    keys["platform"] = (await app.create_api_key("ops-key")).plaintext
    await app.create_user("alice", PASSWORD, roles=["analyst"], tenants=["acme"])
    server = await asyncio.to_thread(app.start_in_thread)
    try:
        yield World(server, keys)
    finally:
        await asyncio.to_thread(server.stop)


def comparable(response: httpx2.Response) -> tuple[int, dict[str, Any]]:
    problem = response.json()
    return response.status_code, {k: v for k, v in problem.items() if k not in ("request_id", "instance")}


# -- what a stranger learns about tenants ------------------------------------------------------------


async def test_a_strangers_login_does_not_tell_whether_the_routes_tenant_exists(world: World) -> None:
    attempt = {"username": "mallory", "password": "not-a-password-at-all"}
    on_existing = await world.send("POST", "/auth/login", tenant="globex", body=attempt)
    on_unknown = await world.send("POST", "/auth/login", tenant="initech", body=attempt)

    assert on_existing.status_code == 401, on_existing.text
    assert comparable(on_unknown) == comparable(on_existing)


async def test_a_strangers_login_on_a_suspended_tenants_route_learns_nothing(world: World) -> None:
    attempt = {"username": "mallory", "password": "not-a-password-at-all"}
    on_active = await world.send("POST", "/auth/login", tenant="acme", body=attempt)
    assert await world.app.suspend_tenant("globex")
    on_suspended = await world.send("POST", "/auth/login", tenant="globex", body=attempt)

    assert "suspended" not in on_suspended.text
    assert comparable(on_suspended) == comparable(on_active)


async def test_metrics_read_on_a_tenants_route_show_nothing_of_other_tenants(world: World) -> None:
    assert (await world.run_rest("globex", "globex", "globex_payroll")).status_code == 200
    assert (await world.run_rest("acme", "acme")).status_code == 200

    metrics = await world.send("GET", "/metrics", tenant="acme", key="acme")

    assert metrics.status_code in (200, 403, 404), metrics.text
    assert 'tenant="globex"' not in metrics.text
    assert "globex_payroll" not in metrics.text


async def test_explain_on_a_tenants_route_does_not_reveal_another_tenants_workflows(world: World) -> None:
    async def explain(workflow: str) -> httpx2.Response:
        query = {"channel": "api", "action": "execute", "workflow": workflow}
        return await world.send("POST", "/authz/explain", tenant="acme", key="acme", body=query)

    theirs = await explain("globex_payroll")
    nobodys = await explain("no_such_workflow")

    assert (theirs.status_code, theirs.json().get("code")) == (
        nobodys.status_code,
        nobodys.json().get("code"),
    )


async def test_health_detail_on_a_tenants_route_counts_only_that_tenants_workflows(world: World) -> None:
    health = await world.send("GET", "/health/detail", tenant="acme", key="acme")
    listing = await world.send("GET", "/workflows", tenant="acme", key="acme")

    assert health.status_code == 200, health.text
    assert health.json()["workflows"] == len(listing.json()["workflows"])


async def test_a_failed_run_that_reached_tenant_data_is_audited_as_such(world: World) -> None:
    reply = await world.run_rest("acme", "acme", "read_then_fail")
    assert reply.status_code == 422, reply.text

    records = await world.app.audit_log(workflow="read_then_fail", limit=5)

    assert records, "the failed run is audited"
    assert "assign" in records[0].reason, records[0].reason


# -- membership outliving the tenant ------------------------------------------------------------------


async def test_a_deleted_tenants_credentials_do_not_reach_a_new_tenant_with_its_id(world: World) -> None:
    """Tenant ids are never reused: a new tenant cannot take a deleted one's id (and with it the
    old tenant's keys, sessions and audit trail); the deleted tenant's key reaches nothing."""
    assert (await world.run_rest("globex", "globex")).status_code == 200
    assert await world.app.delete_tenant("globex")
    with pytest.raises(TenantConflictError, match="never reused"):
        await world.app.create_tenant("globex", "A different Globex", {"api_subdomain": "globex"})
    await world.app.create_tenant("globex2", "A different Globex", {"api_subdomain": "globex"})

    reply = await world.run_rest("globex", "globex")

    assert reply.status_code == 404, reply.text


async def test_a_deleted_tenants_usage_series_leave_the_metrics(world: World) -> None:
    assert (await world.run_rest("globex", "globex")).status_code == 200
    before = await world.send("GET", "/metrics", key="platform")
    assert 'tenant="globex"' in before.text
    assert await world.app.delete_tenant("globex")

    after = await world.send("GET", "/metrics", key="platform")

    assert after.status_code == 200, after.text
    assert 'tenant="globex"' not in after.text


# -- quotas that can be walked around -------------------------------------------------------------------


async def test_cli_sessions_quota_cannot_be_walked_around_by_a_token_exchange(world: World) -> None:
    first = await world.send(
        "POST",
        "/cli/v1/auth/login",
        body={"username": "alice", "password": PASSWORD},
        headers={"x-nexus-tenant": "acme-cli"},
    )
    assert first.status_code == 200, first.text
    second = await world.send(
        "POST",
        "/cli/v1/auth/login",
        body={"username": "alice", "password": PASSWORD},
        headers={"x-nexus-tenant": "acme-cli"},
    )
    assert (second.status_code, second.json()["code"]) == (429, "quota_exceeded")  # the seat is held

    api_login = await world.send(
        "POST", "/auth/login", tenant="acme", body={"username": "alice", "password": PASSWORD}
    )
    assert api_login.status_code == 200, api_login.text
    exchanged = await world.send(
        "POST", "/auth/token", tenant="acme", token=api_login.json()["session_token"], body={"channel": "cli"}
    )
    assert exchanged.status_code == 200, exchanged.text

    extra_cli_session = await world.run_cli("acme", token=exchanged.json()["access_token"])

    assert extra_cli_session.status_code == 429, extra_cli_session.text


# -- settings accepted and ignored ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_mcp_port_that_nothing_will_serve_is_refused(world: World) -> None:
    port = _free_port()
    with pytest.raises(ConfigurationError):
        await world.app.create_tenant("initech", "Initech", {"api_subdomain": "initech", "mcp_port": port})
    assert await world.app.get_tenant("initech") is None
