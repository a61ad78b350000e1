"""Each behaviour once, run on REST, CLI and MCP: the same outcome, an audit record, a metric."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import pytest

from nexus import RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.testing.clients import ChannelClient

ClientFactory = Callable[..., ChannelClient]
Metrics = Callable[..., dict[tuple[str, str, str], float]]


async def _audited(
    server: RunningNexus, channel: Channel, workflow: str
) -> list[tuple[str, str, str | None]]:
    records = await server.app.audit_log(workflow=workflow)
    return [(r.channel.value, r.outcome.value, r.error_code) for r in records if r.channel is channel]


async def test_listing_shows_every_registered_workflow_with_its_schema(
    serve: Callable[..., RunningNexus], channel: Channel, client: ClientFactory, channel_requests: Metrics
) -> None:
    server = serve()
    reply = await client(channel, server).list_workflows()
    assert reply.ok, reply
    names = sorted(w["name"] for w in reply.body["workflows"])
    assert names == ["add", "explode"]
    assert await _audited(server, channel, "*") == [(channel.value, "success", None)]


async def test_execute_returns_outputs_by_node_and_is_audited_and_counted(
    serve: Callable[..., RunningNexus], channel: Channel, client: ClientFactory, channel_requests: Metrics
) -> None:
    server = serve()
    reply = await client(channel, server).execute("add", {"a": 2, "b": 40})
    assert reply.ok, reply
    assert reply.body["outputs"] == {"add": {"result": 42}}
    assert reply.body["workflow"] == "add"
    assert reply.body["run_id"]
    assert await _audited(server, channel, "add") == [(channel.value, "success", None)]
    assert channel_requests(server)[(channel.value, "add", "success")] == 1


async def test_invalid_input_is_refused_with_invalid_input(
    serve: Callable[..., RunningNexus], channel: Channel, client: ClientFactory, channel_requests: Metrics
) -> None:
    server = serve()
    reply = await client(channel, server).execute("add", {"a": "not a number", "b": 1})
    assert reply.outcome is Outcome.INVALID_INPUT, reply
    assert reply.code == "invalid_input"
    assert await _audited(server, channel, "add") == [(channel.value, "invalid_input", "invalid_input")]
    assert channel_requests(server)[(channel.value, "add", "invalid_input")] == 1


async def test_unknown_workflow_answers_not_found(
    serve: Callable[..., RunningNexus], channel: Channel, client: ClientFactory, channel_requests: Metrics
) -> None:
    server = serve()
    reply = await client(channel, server).execute("nope", {})
    assert reply.outcome is Outcome.NOT_FOUND, reply
    assert await _audited(server, channel, "nope") == [(channel.value, "not_found", "workflow_not_found")]
    assert channel_requests(server)[(channel.value, "_unknown", "not_found")] == 1


async def test_workflow_failure_names_the_node_without_a_traceback(
    serve: Callable[..., RunningNexus], channel: Channel, client: ClientFactory, channel_requests: Metrics
) -> None:
    server = serve()
    reply = await client(channel, server).execute("explode", {"reason": "boom"})
    assert reply.outcome is Outcome.FAILED, reply
    assert reply.body["node_id"] == "explode"
    assert "boom" in reply.body["detail"]
    assert "Traceback" not in str(reply.body)
    assert await _audited(server, channel, "explode") == [(channel.value, "failed", "workflow_failed")]


async def test_missing_or_wrong_api_key_is_refused_and_audited(
    serve: Callable[..., RunningNexus], channel: Channel, client: ClientFactory, channel_requests: Metrics
) -> None:
    server = serve(enable_auth=True)
    missing = await client(channel, server).execute("add", {"a": 1, "b": 2})
    wrong = await client(channel, server, token="nxk_0123456789ab_not-the-secret").execute(
        "add", {"a": 1, "b": 2}
    )
    assert missing.outcome is Outcome.UNAUTHENTICATED, missing
    assert wrong.outcome is Outcome.UNAUTHENTICATED, wrong
    # MCP refuses at the transport, before a tool is named; the SDK client may send more than one
    # request before it gives up, and each refused request is audited and counted.
    records = [r for r in await server.app.audit_log() if r.channel is channel]
    assert len(records) >= 2
    assert {(r.outcome.value, r.error_code, r.principal_id) for r in records} == {
        ("unauthenticated", "not_authenticated", "anonymous")
    }
    scraper = (await server.app.create_api_key("scraper")).plaintext
    assert channel_requests(server, scraper)[(channel.value, "_unknown", "unauthenticated")] == len(records)


async def test_valid_api_key_is_accepted_and_names_the_principal(
    serve: Callable[..., RunningNexus], channel: Channel, client: ClientFactory, channel_requests: Metrics
) -> None:
    server = serve(enable_auth=True)
    issued = await server.app.create_api_key("e2e")
    reply = await client(channel, server, token=issued.plaintext).execute("add", {"a": 1, "b": 2})
    assert reply.ok, reply
    records = await server.app.audit_log(workflow="add")
    assert [r.principal_id for r in records] == [f"key:{issued.key.key_id}"]


async def test_revoked_api_key_stops_working(
    serve: Callable[..., RunningNexus], channel: Channel, client: ClientFactory
) -> None:
    server = serve(enable_auth=True)
    issued = await server.app.create_api_key("e2e")
    first = await client(channel, server, token=issued.plaintext).execute("add", {"a": 1, "b": 2})
    assert await server.app.revoke_api_key(issued.key.key_id)
    second = await client(channel, server, token=issued.plaintext).execute("add", {"a": 1, "b": 2})
    assert first.ok, first
    assert second.outcome is Outcome.UNAUTHENTICATED, second


async def test_rate_limit_refuses_the_call_past_the_limit_with_retry_after(
    serve: Callable[..., RunningNexus], channel: Channel, client: ClientFactory, channel_requests: Metrics
) -> None:
    server = serve(enable_auth=True, rate_limit=3)
    issued = await server.app.create_api_key("limited")
    replies = [
        await client(channel, server, token=issued.plaintext).execute("add", {"a": 1, "b": i})
        for i in range(4)
    ]
    refused = next(r for r in replies if not r.ok)
    assert refused.outcome is Outcome.RATE_LIMITED, refused
    assert refused.retry_after is not None
    assert 1 <= refused.retry_after <= 60
    # Every request counts, listings included (the MCP SDK client lists tools after its first call).
    records = await server.app.audit_log(principal_id=f"key:{issued.key.key_id}")
    outcomes = [r.outcome.value for r in reversed(records)]
    assert outcomes[:4] == ["success", "success", "success", "rate_limited"]
    assert all(r.channel is channel for r in records)
    assert channel_requests(server, issued.plaintext)[(channel.value, "add", "rate_limited")] >= 1


async def test_rate_limit_is_shared_by_every_channel(
    serve: Callable[..., RunningNexus], client: ClientFactory
) -> None:
    server = serve(enable_auth=True, rate_limit=3)
    token = (await server.app.create_api_key("shared")).plaintext
    # The MCP call spends two requests (the SDK client lists tools after its first call).
    outcomes = [
        (await client(channel, server, token=token).execute("add", {"a": 1, "b": 1})).outcome
        for channel in (Channel.MCP, Channel.API, Channel.CLI)
    ]
    assert outcomes == [Outcome.SUCCESS, Outcome.SUCCESS, Outcome.RATE_LIMITED]


@pytest.mark.parametrize(
    ("channel", "path"),
    [(Channel.API, "/workflows/add/execute"), (Channel.CLI, "/cli/v1/workflows/add/run")],
    ids=["api", "cli"],
)
async def test_an_unparseable_body_is_refused_and_still_audited(
    serve: Callable[..., RunningNexus], channel: Channel, path: str
) -> None:
    # MCP has no such case: a body that is not JSON-RPC never becomes a call (the SDK answers it).
    server = serve()
    async with httpx2.AsyncClient(base_url=server.api_url) as http:
        answer = await http.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "invalid_input"
    assert await _audited(server, channel, "add") == [(channel.value, "invalid_input", "invalid_input")]


async def test_metrics_want_a_key_when_auth_is_on(serve: Callable[..., RunningNexus]) -> None:
    server = serve(enable_auth=True)
    refused = httpx2.get(f"{server.api_url}/metrics", timeout=10)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    token = (await server.app.create_api_key("scraper")).plaintext
    allowed = httpx2.get(
        f"{server.api_url}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=10
    )
    assert allowed.status_code == 200
    assert "nexus_channel_requests_total" in allowed.text
