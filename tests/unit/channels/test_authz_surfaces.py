"""Health detail, MCP resources and explain on a served app with roles, policies and API keys.

One app serves the module on loopback ports of this process (`app.serving()`); each test finds its
own audit records by request id. MCP calls go through the official SDK client on both protocol eras
the SDK speaks, as in `test_mcp_channel.py`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
import pytest_asyncio
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from nexus import Nexus
from nexus.app import RunningNexus
from nexus.channels.mcp import RESOURCE_NOT_FOUND
from nexus.core.identity import IssuedKey
from nexus.core.types import AuditRecord, Channel, Outcome
from nexus.enterprise.auth import ABACPolicyEngine, RBACManager
from nexus.workflow import Workflow, WorkflowBuilder

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODES = ["legacy", "auto"]
JSON = "application/json"
ROLES = {
    "reader": ["api:read:health", "cli:read:health", "mcp:read:health", "mcp:read:add", "mcp:read:resources"],
    "cli_health": ["cli:read:health"],
    "auditor": ["api:explain:authz", "cli:explain:authz"],
    "stranger": ["api:read:add", "api:execute:add"],
    "scraper": ["api:read:metrics"],
    "tenant_ops": ["api:suspend:tenants"],
}
# Where each HTTP-borne channel serves the two surfaces.
HEALTH = {Channel.API: "/health/detail", Channel.CLI: "/cli/v1/health"}
EXPLAIN = {Channel.API: "/authz/explain", Channel.CLI: "/cli/v1/authz/explain"}
HTTP_CHANNELS = [Channel.API, Channel.CLI]


def adder() -> Workflow:
    builder = WorkflowBuilder().add_input("a", int, description="First").add_input("b", int)
    return builder.add_node("PythonCodeNode", "add", {"code": "result = a + b"}).build()


def build_app(tmp_path: Path, roles: Mapping[str, list[str]] = ROLES) -> Nexus:
    """ "add" (tag math, classification 2) and "secret"; `roles`; the "cleared" and "classified" policies."""
    app = Nexus(api_port=0, mcp_port=0, enable_auth=True, state_url=f"sqlite:///{tmp_path}/state.db")
    app.register(
        "add", adder(), description="Add two integers", tags=["math"], metadata={"classification_level": 2}
    )
    secret = WorkflowBuilder().add_node("PythonCodeNode", "noop", {"code": "result = 1"}).build()
    app.register("secret", secret, description="Nobody's to read")
    rbac = RBACManager()
    for role, permissions in roles.items():
        rbac.create_role(role, permissions)
    app.set_rbac_manager(rbac)
    abac = ABACPolicyEngine()
    abac.add_policy(
        "cleared",
        {
            "condition": "user.clearance_level >= resource.classification_level",
            "channels": ["api"],
            "resources": ["math"],
            "effect": "permit",
        },
    )
    # Over MCP, "secret" is for the cleared only: invisible to everyone else, as a tool or a resource.
    abac.add_policy(
        "classified",
        {
            "condition": "user.clearance_level >= 5",
            "channels": ["mcp"],
            "resources": ["secret"],
            "effect": "permit",
        },
    )
    app.set_abac_engine(abac)
    return app


_IDS = itertools.count(1)


def new_request_id() -> str:
    return f"authz-surfaces-{next(_IDS):08d}"


@dataclass
class Served:
    app: Nexus
    running: RunningNexus
    keys: dict[str, IssuedKey]

    async def call(
        self, method: str, path: str, role: str | None, *, json: Any = None, content: bytes | None = None
    ) -> httpx2.Response:
        """One call as `role`'s key (None: no credential), with a request id of its own."""
        headers = {"x-request-id": new_request_id(), "content-type": JSON}
        if role is not None:
            headers["authorization"] = f"Bearer {self.keys[role].plaintext}"
        async with httpx2.AsyncClient(base_url=self.running.api_url, timeout=10) as http:
            return await http.request(method, path, json=json, content=content, headers=headers)

    async def records(self, workflow: str, *request_ids: str) -> list[AuditRecord]:
        found = await self.app.audit_log(workflow=workflow, limit=1000)
        return [record for record in reversed(found) if record.request_id in request_ids]

    @contextlib.asynccontextmanager
    async def mcp(self, role: str, mode: str, request_id: str = "") -> AsyncIterator[Client]:
        headers = {"authorization": f"Bearer {self.keys[role].plaintext}"}
        if request_id:
            headers["x-request-id"] = request_id
        async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
            transport = streamable_http_client(self.running.mcp_url, http_client=http)
            async with Client(transport, mode=mode) as client:
                yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def s(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    app = build_app(tmp_path_factory.mktemp("authz-surfaces"))
    async with app.serving() as running:
        keys = {role: await app.create_api_key(role, roles=[role]) for role in ROLES}
        yield Served(app, running, keys)


async def explain(s: Served, channel: Channel, role: str, body: Any) -> httpx2.Response:
    return await s.call("POST", EXPLAIN[channel], role, json=body)


def request_id(response: httpx2.Response) -> str:
    return response.headers["x-request-id"]


# -- health detail --------------------------------------------------------------------------------


async def test_health_stays_public_and_minimal_while_the_detail_needs_a_credential(s: Served) -> None:
    public = await s.call("GET", "/health", None)
    detail = await s.call("GET", HEALTH[Channel.API], None)
    cli_detail = await s.call("GET", HEALTH[Channel.CLI], None)
    assert (public.status_code, public.json()) == (200, {"status": "ok"})
    assert detail.status_code == cli_detail.status_code == 401
    assert detail.json()["code"] == "not_authenticated"
    [record] = await s.records("_health", request_id(detail))
    assert record.outcome == Outcome.UNAUTHENTICATED


@pytest.mark.parametrize("channel", HTTP_CHANNELS)
async def test_health_detail_answers_a_role_that_may_read_health_on_that_channel(
    s: Served, channel: Channel
) -> None:
    response = await s.call("GET", HEALTH[channel], "reader")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "version": "0.1.0", "workflows": 2, "ready": True}
    [record] = await s.records("_health", request_id(response))
    assert (record.channel, record.outcome, record.action) == (channel, Outcome.SUCCESS, "read")
    assert record.principal_id == f"key:{s.keys['reader'].key.key_id}"


@pytest.mark.parametrize("channel", HTTP_CHANNELS)
async def test_health_detail_is_forbidden_without_read_health_on_that_channel(
    s: Served, channel: Channel
) -> None:
    response = await s.call("GET", HEALTH[channel], "stranger")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "forbidden"
    [record] = await s.records("_health", request_id(response))
    assert (record.outcome, record.error_code) == (Outcome.FORBIDDEN, "forbidden")
    assert "no permission" in record.reason


async def test_read_health_on_one_channel_does_not_open_the_others(s: Served) -> None:
    cli = await s.call("GET", HEALTH[Channel.CLI], "cli_health")
    api = await s.call("GET", HEALTH[Channel.API], "cli_health")
    async with s.mcp("cli_health", "legacy") as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource("nexus://health")
    assert (cli.status_code, api.status_code) == (200, 403)
    assert caught.value.error.data["code"] == "forbidden"


# -- MCP resources --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_resources_list_shows_only_the_readable_workflows_and_health(s: Served, mode: str) -> None:
    async with s.mcp("reader", mode) as client:
        capabilities = client.server_capabilities
        listing = await client.list_resources()
    assert capabilities.resources is not None
    resources = {resource.uri: resource for resource in listing.resources}
    assert set(resources) == {"nexus://workflows/add", "nexus://health"}
    add = resources["nexus://workflows/add"]
    assert (add.name, add.description, add.mime_type) == ("add", "Add two integers", JSON)


@pytest.mark.parametrize("mode", MODES)
async def test_reading_a_readable_workflow_returns_its_description_without_attributes(
    s: Served, mode: str
) -> None:
    rid = new_request_id()
    async with s.mcp("reader", mode, rid) as client:
        result = await client.read_resource("nexus://workflows/add")
    [content] = result.contents
    assert isinstance(content, types.TextResourceContents)
    assert (content.uri, content.mime_type) == ("nexus://workflows/add", JSON)
    document = json.loads(content.text)
    assert set(document) == {"name", "description", "tags", "input_schema"}
    assert (document["name"], document["description"], document["tags"]) == (
        "add",
        "Add two integers",
        ["math"],
    )
    assert set(document["input_schema"]["properties"]) == {"a", "b"}
    assert "classification_level" not in content.text
    [record] = await s.records("add", rid)
    assert (record.channel, record.outcome, record.action) == (Channel.MCP, Outcome.SUCCESS, "read")


@pytest.mark.parametrize("mode", MODES)
async def test_reading_an_invisible_workflow_is_resource_not_found_like_an_unknown_one(
    s: Served, mode: str
) -> None:
    # The 2025 protocols name an unknown resource -32002; 2026-07-28 answers invalid params.
    expected = RESOURCE_NOT_FOUND if mode == "legacy" else types.INVALID_PARAMS
    rid = new_request_id()
    async with s.mcp("reader", mode, rid) as client:
        with pytest.raises(MCPError) as hidden:
            await client.read_resource("nexus://workflows/secret")
        with pytest.raises(MCPError) as unknown:
            await client.read_resource("nexus://workflows/nope")
    for caught, uri in ((hidden, "nexus://workflows/secret"), (unknown, "nexus://workflows/nope")):
        error = caught.value.error
        assert error.code == expected
        assert (error.data["code"], error.data["uri"]) == ("workflow_not_found", uri)
        assert error.data["request_id"] == rid
    assert hidden.value.error.message == "No workflow named 'secret'."
    [record] = await s.records("secret", rid)
    assert record.outcome == Outcome.NOT_FOUND
    assert "classified" in record.reason


@pytest.mark.parametrize("mode", MODES)
async def test_a_uri_that_is_not_a_nexus_resource_is_not_found_and_audited(s: Served, mode: str) -> None:
    rid = new_request_id()
    async with s.mcp("reader", mode, rid) as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource("file:///etc/passwd")
    assert caught.value.error.data["uri"] == "file:///etc/passwd"
    assert "file:///etc/passwd" in caught.value.error.message
    [record] = await s.records("_unknown", rid)
    assert record.outcome == Outcome.NOT_FOUND


@pytest.mark.parametrize("mode", MODES)
async def test_the_health_resource_reads_the_detail_for_a_role_that_may_read_health(
    s: Served, mode: str
) -> None:
    rid = new_request_id()
    async with s.mcp("reader", mode, rid) as client:
        result = await client.read_resource("nexus://health")
    [content] = result.contents
    assert isinstance(content, types.TextResourceContents)
    assert content.mime_type == JSON
    assert json.loads(content.text) == {"status": "ok", "version": "0.1.0", "workflows": 2, "ready": True}
    [record] = await s.records("_health", rid)
    assert (record.channel, record.outcome) == (Channel.MCP, Outcome.SUCCESS)


@pytest.mark.parametrize("mode", MODES)
async def test_the_health_resource_is_a_json_rpc_error_without_read_health(s: Served, mode: str) -> None:
    rid = new_request_id()
    async with s.mcp("stranger", mode, rid) as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource("nexus://health")
    error = caught.value.error
    assert error.code == types.INVALID_REQUEST
    assert (error.data["code"], error.data["status"]) == ("forbidden", 403)
    [record] = await s.records("_health", rid)
    assert record.outcome == Outcome.FORBIDDEN


# -- explain --------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", HTTP_CHANNELS)
async def test_explain_returns_the_outcome_and_reason_for_another_principal(
    s: Served, channel: Channel
) -> None:
    reader = s.keys["reader"].key.key_id
    denied = await explain(
        s, channel, "auditor", {"api_key": reader, "channel": "api", "action": "execute", "workflow": "add"}
    )
    allowed = await explain(
        s, channel, "auditor", {"api_key": reader, "channel": "mcp", "action": "read", "workflow": "add"}
    )
    assert denied.status_code == 200, denied.text
    no = denied.json()
    # Neither execute nor read on "add" over the API: the workflow does not exist for this key there.
    assert (no["outcome"], no["allowed"], no["roles"], no["permission"]) == (
        "invisible",
        False,
        ["reader"],
        None,
    )
    assert (
        no["reason"]
        == "denied: no permission of the roles held (reader) allows api:execute on workflow 'add'"
    )
    assert no["principal"]["id"] == f"key:{reader}"
    yes = allowed.json()
    assert (yes["outcome"], yes["permission"]) == ("allow", "role 'reader' grants 'mcp:read:add'")
    records = await s.records("_authz", request_id(denied), request_id(allowed))
    assert [(r.channel, r.action, r.outcome) for r in records] == [(channel, "explain", Outcome.SUCCESS)] * 2
    # The audit says whose access was looked at, and what came of it.
    assert [r.reason.split("; ", 1)[1] for r in records] == [
        f"explained API key {reader!r}: api:execute on workflow 'add' -> invisible",
        f"explained API key {reader!r}: mcp:read on workflow 'add' -> allow",
    ]


@pytest.mark.parametrize("channel", HTTP_CHANNELS)
async def test_explain_answers_for_the_tenants_surface(s: Served, channel: Channel) -> None:
    query = {"roles": ["tenant_ops"], "channel": "api", "surface": "tenants"}
    suspend = await explain(s, channel, "auditor", {**query, "action": "suspend"})
    delete = await explain(s, channel, "auditor", {**query, "action": "delete"})
    assert suspend.status_code == 200, suspend.text
    yes, no = suspend.json(), delete.json()
    assert (yes["outcome"], yes["target"]) == ("allow", "the tenants surface")
    assert yes["permission"] == "role 'tenant_ops' grants 'api:suspend:tenants'"
    assert (no["outcome"], no["permission"]) == ("deny", None)
    records = await s.records("_authz", request_id(suspend))
    assert [r.reason.split("; ", 1)[1] for r in records] == [
        "explained roles ['tenant_ops']: api:suspend on the tenants surface -> allow"
    ]


async def test_explain_gives_each_applicable_policy_its_outcome(s: Served) -> None:
    query = {"roles": ["stranger"], "channel": "api", "action": "read", "workflow": "add"}
    cleared = await explain(s, Channel.API, "auditor", {**query, "attributes": {"clearance_level": 3}})
    uncleared = await explain(s, Channel.API, "auditor", {**query, "attributes": {"clearance_level": 1}})
    yes, no = cleared.json(), uncleared.json()
    assert yes["outcome"] == "allow"
    assert [(p["name"], p["satisfied"]) for p in yes["policies"]] == [("cleared", True)]
    assert no["outcome"] == "invisible"
    assert no["reason"] == "denied: policy 'cleared' (permit) did not hold"
    assert [(p["name"], p["satisfied"]) for p in no["policies"]] == [("cleared", False)]


@pytest.mark.parametrize("channel", HTTP_CHANNELS)
async def test_explain_is_forbidden_without_explain_authz_on_that_channel(
    s: Served, channel: Channel
) -> None:
    query = {"roles": ["reader"], "channel": "api", "action": "read", "surface": "health"}
    response = await explain(s, channel, "reader", query)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    [record] = await s.records("_authz", request_id(response))
    assert (record.outcome, record.action) == (Outcome.FORBIDDEN, "explain")


async def test_explain_evaluates_a_draft_without_changing_the_installed_decision(s: Served) -> None:
    draft = {"rbac": {"roles": {"reader": {"permissions": ["api:execute:add"]}}}, "abac": {"policies": {}}}
    reader = s.keys["reader"].key.key_id
    query = {"api_key": reader, "channel": "api", "action": "execute", "workflow": "add"}
    drafted = await explain(s, Channel.API, "auditor", {**query, "draft": draft})
    installed = await explain(s, Channel.API, "auditor", query)
    executed = await s.call("POST", "/workflows/add/execute", "reader", json={"inputs": {"a": 1, "b": 2}})
    assert drafted.status_code == 200, drafted.text
    assert (drafted.json()["outcome"], drafted.json()["draft"]) == ("allow", True)
    assert drafted.json()["permission"] == "role 'reader' grants 'api:execute:add'"
    assert (installed.json()["outcome"], installed.json()["draft"]) == ("invisible", False)
    assert executed.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2]",
        b"not json",
        b'{"channel": "smoke", "action": "read", "workflow": "add"}',
        b'{"channel": "api", "action": "read", "workflow": "add", "draft": {"rbac": {"roles": 1}}}',
        b'{"channel": "api", "action": "read", "user": "nobody", "surface": "health"}',
    ],
)
async def test_a_bad_explain_body_answers_422_and_is_audited(s: Served, body: bytes) -> None:
    response = await s.call("POST", EXPLAIN[Channel.API], "auditor", content=body)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"
    [record] = await s.records("_authz", request_id(response))
    assert (record.outcome, record.error_code) == (Outcome.INVALID_INPUT, "invalid_input")
    assert record.principal_id == f"key:{s.keys['auditor'].key.key_id}"


async def test_a_bad_explain_body_from_a_caller_who_may_not_explain_answers_403(s: Served) -> None:
    response = await s.call("POST", EXPLAIN[Channel.API], "reader", content=b"[")
    assert response.status_code == 403
    [record] = await s.records("_authz", request_id(response))
    assert record.outcome == Outcome.FORBIDDEN


async def test_metrics_need_read_on_metrics_when_roles_are_set_and_refusals_are_audited(s: Served) -> None:
    allowed = await s.call("GET", "/metrics", "scraper")
    refused = await s.call("GET", "/metrics", "reader")
    assert allowed.status_code == 200
    assert "nexus_channel_requests_total" in allowed.text
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    records = await s.records("_metrics", refused.headers["x-request-id"])
    assert [r.outcome for r in records] == [Outcome.FORBIDDEN]
    assert "(reader) allows api:read on the metrics surface" in records[0].reason
