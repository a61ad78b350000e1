"""The MCP channel against a real pipeline on memory backends, through the official SDK client.

Every MCP test runs on both protocol eras the SDK speaks over streamable HTTP: the legacy
initialize handshake and the 2026 per-request exchange (reached by the client's "auto" probe).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from nexus.backends.counters import MemoryCounterStore
from nexus.backends.memory import MemoryAuditSink, MemoryKeyStore
from nexus.channels.mcp import CREDENTIAL_ENV, McpChannel
from nexus.core.audit import Auditor
from nexus.core.authorization import ALLOW_ALL, AllowAll, Authorizer
from nexus.core.catalog import Catalog
from nexus.core.identity import AnonymousAuthenticator, ApiKeyAuthenticator, Authenticator, new_api_key
from nexus.core.pipeline import Pipeline
from nexus.core.ratelimit import Limiter, NoLimit, RateLimiter
from nexus.core.telemetry import NoopMeter, SystemClock
from nexus.core.types import AuditRecord, Channel, Decision, Invocation, Outcome, WorkflowInfo
from nexus.errors import AuthenticationError
from nexus.settings import McpSettings
from nexus.workflow import AsyncLocalRuntime, WorkflowBuilder

URL = "http://127.0.0.1:3000/mcp"
MODES = ["legacy", "auto"]


class HideSecret:
    """A policy that hides the workflow named "secret" from everyone."""

    def decide(self, invocation: Invocation, workflow: WorkflowInfo | None) -> Decision:
        if workflow is not None and workflow.name == "secret":
            return Decision(allowed=False, reason="hidden by test policy", visible=False)
        return ALLOW_ALL


def catalog() -> Catalog:
    result = Catalog()
    add = WorkflowBuilder()
    add.add_input("a", int, description="First addend")
    add.add_input("b", int, description="Second addend")
    add.add_node("PythonCodeNode", "add", {"code": "result = a + b"})
    result.register("add", add.build(), description="Add two integers", tags=["math"])
    fail = WorkflowBuilder()
    fail.add_input("reason", str)
    fail.add_node("PythonCodeNode", "explode", {"code": "raise ValueError(reason)"})
    result.register("explode", fail.build(), description="Always fails")
    secret = WorkflowBuilder()
    secret.add_node("PythonCodeNode", "noop", {"code": "result = 1"})
    result.register("secret", secret.build(), description="Hidden by policy")
    opaque = WorkflowBuilder()
    opaque.add_node("PythonCodeNode", "opaque", {"code": "result = object()"})
    result.register("opaque", opaque.build(), description="Returns a value JSON cannot carry")
    return result


@dataclass
class Rig:
    """A channel over a real pipeline, and the memory backends behind it for inspection."""

    channel: McpChannel
    audit: MemoryAuditSink
    keys: MemoryKeyStore
    counters: MemoryCounterStore

    async def records(self, workflow: str) -> list[AuditRecord]:
        return list(await self.audit.query(workflow=workflow))

    async def issue_key(self) -> str:
        issued = new_api_key("tester", (), SystemClock())
        await self.keys.add(issued.key)
        return issued.plaintext


def build_rig(
    *, auth: bool = False, rate_limit: int | None = None, authorizer: Authorizer | None = None
) -> Rig:
    clock = SystemClock()
    audit, keys, counters = MemoryAuditSink(), MemoryKeyStore(), MemoryCounterStore()
    authenticator: Authenticator = (
        ApiKeyAuthenticator(keys, clock, cache_ttl_s=0) if auth else AnonymousAuthenticator()
    )
    limiter: Limiter = RateLimiter(counters, rate_limit) if rate_limit else NoLimit()
    pipeline = Pipeline(
        catalog=catalog(),
        authenticator=authenticator,
        authorizer=authorizer or AllowAll(),
        limiter=limiter,
        auditor=Auditor(audit, clock),
        meter=NoopMeter(),
        clock=clock,
        runtime=AsyncLocalRuntime(),
        encode=encoder_with_a_bug,
    )
    channel = McpChannel(pipeline, McpSettings(), auth_enabled=auth, version="1.2.3")
    return Rig(channel, audit, keys, counters)


def encoder_with_a_bug(value: Any) -> str:
    """An encoder that crashes on what it cannot encode: the stand-in for an unexpected failure."""
    try:
        return json.dumps(value)
    except TypeError as exc:
        raise RuntimeError(f"encoder bug: {exc}") from exc


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[Rig]:
    """A rig whose session manager runs for the block (entered and left in the test's own task)."""
    rig = build_rig(**options)
    try:
        async with rig.channel.running():
            yield rig
    finally:
        await rig.counters.close()


def http_client(rig: Rig, token: str | None = None) -> httpx2.AsyncClient:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=rig.channel.asgi_app), headers=headers)


@contextlib.asynccontextmanager
async def connect(rig: Rig, mode: str, token: str | None = None) -> AsyncIterator[Client]:
    async with http_client(rig, token) as http:
        transport = streamable_http_client(URL, http_client=http)
        async with Client(transport, mode=mode) as client:  # type: ignore[arg-type]  # mode is a Literal
            yield client


def text_of(result: types.CallToolResult) -> dict[str, Any]:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    document: dict[str, Any] = json.loads(block.text)
    return document


# -- tools/list ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_tools_list_shows_each_visible_workflow_with_its_input_schema(mode: str) -> None:
    async with serving(authorizer=HideSecret()) as rig:
        async with connect(rig, mode) as client:
            listing = await client.list_tools()
        tools = {tool.name: tool for tool in listing.tools}
        assert set(tools) == {"add", "explode", "opaque"}
        add = tools["add"]
        assert add.description == "Add two integers"
        assert add.input_schema["type"] == "object"
        assert set(add.input_schema["properties"]) == {"a", "b"}
        assert add.input_schema["properties"]["a"]["type"] == "integer"
        assert set(add.input_schema["required"]) == {"a", "b"}


async def test_server_reports_the_configured_name_and_version() -> None:
    async with serving() as rig:
        async with connect(rig, "legacy") as client:
            info = client.server_info
        assert info is not None
        assert (info.name, info.version) == ("nexus", "1.2.3")


# -- tools/call -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_tool_call_returns_the_result_document_as_structured_content_and_text(mode: str) -> None:
    async with serving() as rig:
        async with connect(rig, mode) as client:
            result = await client.call_tool("add", {"a": 2, "b": 3})
            modern = client.protocol_version in MODERN_PROTOCOL_VERSIONS
        assert modern == (mode == "auto")
        assert result.is_error is False
        document = result.structured_content
        assert document["workflow"] == "add"
        assert document["outputs"] == {"add": {"result": 5}}
        assert isinstance(document["run_id"], str)
        assert document["run_id"]
        assert isinstance(document["duration_ms"], int | float)
        assert text_of(result) == document
        [record] = await rig.records("add")
        assert (record.channel, record.outcome, record.client_addr) == (
            Channel.MCP,
            Outcome.SUCCESS,
            "127.0.0.1",
        )


@pytest.mark.parametrize("mode", MODES)
async def test_invalid_input_is_a_tool_error_with_code_invalid_input_and_is_audited(mode: str) -> None:
    async with serving() as rig:
        async with connect(rig, mode) as client:
            result = await client.call_tool("add", {"a": "two"})
        assert result.is_error is True
        problem = result.structured_content
        assert problem["code"] == "invalid_input"
        assert problem["status"] == 422
        assert problem["request_id"]
        assert text_of(result) == problem
        [record] = await rig.records("add")
        assert (record.outcome, record.error_code) == (Outcome.INVALID_INPUT, "invalid_input")
        assert record.request_id == problem["request_id"]


@pytest.mark.parametrize("mode", MODES)
async def test_failing_workflow_is_a_tool_error_naming_the_node(mode: str) -> None:
    async with serving() as rig:
        async with connect(rig, mode) as client:
            result = await client.call_tool("explode", {"reason": "boom"})
        assert result.is_error is True
        problem = result.structured_content
        assert problem["code"] == "workflow_failed"
        assert problem["node_id"] == "explode"
        [record] = await rig.records("explode")
        assert record.outcome == Outcome.FAILED


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_tool_is_a_json_rpc_invalid_params_error(mode: str) -> None:
    async with serving() as rig:
        async with connect(rig, mode) as client:
            with pytest.raises(MCPError) as caught:
                await client.call_tool("nope", {})
        assert caught.value.error.code == types.INVALID_PARAMS
        assert "nope" in caught.value.error.message
        [record] = await rig.records("nope")
        assert record.outcome == Outcome.NOT_FOUND


@pytest.mark.parametrize("mode", MODES)
async def test_an_unexpected_failure_is_an_opaque_json_rpc_internal_error(mode: str) -> None:
    async with serving() as rig, connect(rig, mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("opaque", {})
    error = caught.value.error
    assert error.code == types.INTERNAL_ERROR
    assert error.message == f"Internal error; request id {error.data['request_id']}."
    assert "object" not in error.message


@pytest.mark.parametrize("mode", MODES)
async def test_a_refused_listing_is_a_json_rpc_error_carrying_the_problem(mode: str) -> None:
    async with serving(rate_limit=1) as rig, connect(rig, mode) as client:
        await client.list_tools()
        with pytest.raises(MCPError) as caught:
            await client.list_tools(cache_mode="refresh")
    error = caught.value.error
    assert error.code == types.INVALID_REQUEST
    assert error.data["code"] == "rate_limited"
    assert error.data["retry_after"] >= 1


async def test_hidden_workflow_answers_like_an_unknown_one() -> None:
    async with serving(authorizer=HideSecret()) as rig:
        async with connect(rig, "auto") as client:
            with pytest.raises(MCPError) as caught:
                await client.call_tool("secret", {})
        assert caught.value.error.code == types.INVALID_PARAMS
        [record] = await rig.records("secret")
        assert record.outcome == Outcome.NOT_FOUND


@pytest.mark.parametrize("mode", MODES)
async def test_rate_limited_call_is_a_tool_error_with_retry_after(mode: str) -> None:
    # The SDK client lists tools once before trusting a result, so the listing spends one call too.
    async with serving(rate_limit=2) as rig:
        async with connect(rig, mode) as client:
            await client.list_tools()
            first = await client.call_tool("add", {"a": 1, "b": 1})
            second = await client.call_tool("add", {"a": 1, "b": 1})
        assert first.is_error is False
        assert second.is_error is True
        assert second.structured_content["code"] == "rate_limited"
        assert second.structured_content["retry_after"] >= 1
        assert text_of(second)["retry_after"] == second.structured_content["retry_after"]


async def test_request_id_header_is_carried_into_the_result_and_the_audit() -> None:
    async with serving() as rig:
        async with http_client(rig) as http:
            http.headers["x-request-id"] = "req-0123456789"
            async with Client(streamable_http_client(URL, http_client=http), mode="legacy") as client:
                result = await client.call_tool("add", {"a": 1})
        assert result.structured_content["request_id"] == "req-0123456789"
        [record] = await rig.records("add")
        assert record.request_id == "req-0123456789"


# -- transport authentication -------------------------------------------------------------------------


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def call_body(name: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}}


POST_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def test_without_a_token_the_transport_answers_401_with_a_bearer_challenge() -> None:
    async with serving(auth=True) as rig:
        async with http_client(rig) as http:
            response = await http.post(URL, json=call_body("add"), headers=POST_HEADERS)
        assert response.status_code == 401
        # RFC 6750 3.1: no error code when no credential came; RFC 9728 5.1: where the metadata is.
        assert response.headers["www-authenticate"] == (
            'Bearer realm="nexus", '
            'resource_metadata="http://127.0.0.1:3000/.well-known/oauth-protected-resource/mcp"'
        )
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "not_authenticated"
        assert problem["request_id"] == response.headers["x-request-id"]
        [record] = await rig.records("add")
        assert record.outcome == Outcome.UNAUTHENTICATED


async def test_a_wrong_token_is_refused_at_transport_as_an_invalid_token() -> None:
    async with serving(auth=True) as rig:
        await rig.issue_key()
        async with http_client(rig, token="nxk_0123456789ab_wrong") as http:
            response = await http.post(
                URL, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=POST_HEADERS
            )
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            'Bearer realm="nexus", '
            'resource_metadata="http://127.0.0.1:3000/.well-known/oauth-protected-resource/mcp", '
            'error="invalid_token"'
        )
        [record] = await rig.records("*")
        assert (record.outcome, record.error_code) == (Outcome.UNAUTHENTICATED, "not_authenticated")


@pytest.mark.parametrize("mode", MODES)
async def test_the_sdk_client_without_a_token_cannot_connect(mode: str) -> None:
    async with serving(auth=True) as rig:
        with pytest.raises(ExceptionGroup) as caught:
            async with connect(rig, mode):
                pass
        [failure] = leaves(caught.value)
        # The SDK client reports any HTTP error status of the handshake this way.
        assert isinstance(failure, MCPError)
        assert failure.error.message == "Server returned an error response"
        records = await rig.audit.query()
        assert records
        assert all(r.outcome == Outcome.UNAUTHENTICATED for r in records)


@pytest.mark.parametrize("mode", MODES)
async def test_a_valid_key_lists_and_calls_tools_as_its_principal(mode: str) -> None:
    async with serving(auth=True) as rig:
        token = await rig.issue_key()
        async with connect(rig, mode, token) as client:
            listing = await client.list_tools()
            result = await client.call_tool("add", {"a": 20, "b": 22})
        assert {tool.name for tool in listing.tools} == {"add", "explode", "opaque", "secret"}
        assert result.structured_content["outputs"] == {"add": {"result": 42}}
        [record] = await rig.records("add")
        assert record.principal_id.startswith("key:")
        assert record.outcome == Outcome.SUCCESS


async def test_a_body_over_the_limit_is_refused_before_authentication() -> None:
    async with serving(auth=True) as rig:
        async with http_client(rig) as http:
            response = await http.post(URL, content=b"x" * (4 * 1024 * 1024 + 1), headers=POST_HEADERS)
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"


async def test_without_auth_no_credential_is_needed() -> None:
    async with serving(auth=False) as rig:
        async with connect(rig, "legacy") as client:
            result = await client.call_tool("add", {"a": 1, "b": 2})
        assert result.structured_content["outputs"]["add"]["result"] == 3
        [record] = await rig.records("add")
        assert record.principal_id == "anonymous"


# -- routing and lifecycle --------------------------------------------------------------------------


async def test_other_paths_answer_404() -> None:
    async with serving() as rig:
        async with http_client(rig) as http:
            response = await http.post(
                "http://127.0.0.1:3000/other", json=call_body("add"), headers=POST_HEADERS
            )
        assert response.status_code == 404


async def test_outside_running_the_endpoint_answers_503() -> None:
    rig = build_rig()
    async with http_client(rig) as http:
        response = await http.post(URL, json=call_body("add"), headers=POST_HEADERS)
    await rig.counters.close()
    assert response.status_code == 503
    assert await rig.records("add") == []


async def test_a_foreign_host_header_is_refused_on_a_loopback_server() -> None:
    async with serving() as rig:
        async with http_client(rig) as http:
            response = await http.post(
                "http://evil.example:3000/mcp", json=call_body("add"), headers=POST_HEADERS
            )
        assert response.status_code == 421
        assert await rig.records("add") == []


# -- stdio ------------------------------------------------------------------------------------------


async def test_stdio_with_auth_on_refuses_to_serve_without_a_valid_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(auth=True) as rig:
        monkeypatch.setenv(CREDENTIAL_ENV, "nxk_0123456789ab_wrong")
        with pytest.raises(AuthenticationError):
            await rig.channel.serve_stdio()
        [record] = await rig.records("*")
        assert record.outcome == Outcome.UNAUTHENTICATED


STDIO_SERVER = """
import asyncio, sys
from datetime import UTC, datetime
sys.path.insert(0, sys.argv[1])
from test_mcp_channel import build_rig
from nexus.core.identity import hash_secret
from nexus.core.types import ApiKey

async def main():
    rig = build_rig(auth=True)
    secret_hash = hash_secret(sys.argv[2])
    await rig.keys.add(ApiKey("0123456789ab", "stdio", secret_hash, frozenset(), datetime.now(UTC)))
    await rig.channel.serve_stdio()

asyncio.run(main())
"""


async def test_stdio_serves_tools_with_the_token_from_the_environment() -> None:
    secret = "stdio-secret-value"
    env = dict(os.environ, **{CREDENTIAL_ENV: f"nxk_0123456789ab_{secret}"})
    here = str(Path(__file__).parent)
    server = StdioServerParameters(command=sys.executable, args=["-c", STDIO_SERVER, here, secret], env=env)
    with anyio.fail_after(30):
        async with Client(server, mode="legacy") as client:
            listing = await client.list_tools()
            result = await client.call_tool("add", {"a": 4, "b": 5})
    assert {tool.name for tool in listing.tools} == {"add", "explode", "opaque", "secret"}
    assert result.structured_content["outputs"] == {"add": {"result": 9}}


async def test_without_an_http_request_calls_use_the_local_credential() -> None:
    async with serving() as rig:
        async with Client(rig.channel.server, mode="legacy") as client:
            result = await client.call_tool("add", {"a": 1, "b": 1})
        assert result.structured_content["outputs"]["add"]["result"] == 2
        [record] = await rig.records("add")
        assert (record.principal_id, record.client_addr) == ("anonymous", "")
