"""Password logins on a tenant's REST route (its subdomain): only the tenant's members get a session,
made in that tenant; anyone else is answered exactly as a wrong password, and the audit says why."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest_asyncio

from nexus import Nexus, RunningNexus
from nexus.core.types import Outcome
from nexus.enterprise.tenancy import TenantManager
from nexus.workflow.builder import WorkflowBuilder

BASE = "api.test"
PASSWORD = "correct horse battery staple"


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningNexus]:
    app = Nexus(api_port=0, mcp_port=0, state_url=f"sqlite:///{tmp_path}/logins.db", enable_auth=True)
    app.auth.password_time_cost = 1
    app.auth.password_memory_kib = 1024
    app.tenancy.manager = TenantManager(isolation_level="moderate")
    app.tenancy.base_domain = BASE
    app.tenancy.routing = {"api": "subdomain", "cli": "prefix", "mcp": "path"}
    where = WorkflowBuilder()
    where.add_node("PythonCodeNode", "where", {"code": "result = tenant_context['tenant_id']"})
    app.register_workflow("where", where.build(), tenant_scoped=True)
    for tenant in ("acme", "globex"):
        await app.create_tenant(tenant, tenant.title(), {"api_subdomain": tenant})
    await app.create_user("alice", PASSWORD, roles=["analyst"], tenants=["acme"])
    running = await asyncio.to_thread(app.start_in_thread)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


async def call(
    server: RunningNexus, tenant: str, path: str, body: dict[str, Any], token: str | None = None
) -> httpx2.Response:
    headers = {"host": f"{tenant}.{BASE}"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(base_url=server.api_url, timeout=30) as http:
        return await http.post(path, json=body, headers=headers)


def comparable(problem: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in problem.items() if name not in ("request_id", "instance")}


async def test_a_login_on_a_tenant_route_the_user_is_no_member_of_answers_as_a_wrong_password(
    server: RunningNexus,
) -> None:
    wrong_password = await call(server, "acme", "/auth/login", {"username": "alice", "password": "nope-nope"})
    not_a_member = await call(server, "globex", "/auth/login", {"username": "alice", "password": PASSWORD})

    assert not_a_member.status_code == wrong_password.status_code == 401
    assert comparable(not_a_member.json()) == comparable(wrong_password.json())
    assert "globex" not in not_a_member.text
    records = await server.app.audit_log(limit=20)
    refused = [r for r in records if r.tenant_id == "globex" and r.outcome is Outcome.UNAUTHENTICATED]
    assert len(refused) == 1
    assert refused[0].principal_id == "login:alice"


async def test_a_members_login_on_its_tenants_route_runs_workflows_there(server: RunningNexus) -> None:
    login = await call(server, "acme", "/auth/login", {"username": "alice", "password": PASSWORD})
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]

    here = await call(server, "acme", "/workflows/where/execute", {"inputs": {}}, token)
    elsewhere = await call(server, "globex", "/workflows/where/execute", {"inputs": {}}, token)

    assert here.status_code == 200, here.text
    assert here.json()["outputs"]["where"]["result"] == "acme"
    assert elsewhere.status_code == 404
    records = await server.app.audit_log(limit=20)
    logins = [r for r in records if r.outcome is Outcome.SUCCESS and r.tenant_id == "acme"]
    assert any(r.reason.startswith("logged in by password") for r in logins)


async def test_the_audit_says_the_refused_login_was_no_member_of_the_tenant(server: RunningNexus) -> None:
    await call(server, "globex", "/auth/login", {"username": "alice", "password": PASSWORD})

    records = await server.app.audit_log(limit=20)
    (refused,) = [r for r in records if r.tenant_id == "globex" and r.outcome is Outcome.UNAUTHENTICATED]

    assert refused.reason == "not a member of tenant globex"
