"""The CLI channel's routes (`/cli/v1`) over a real pipeline on memory backends, in-process over ASGI."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from nexus.backends.counters import MemoryCounterStore
from nexus.backends.memory import MemoryAuditSink, MemoryKeyStore
from nexus.channels import http
from nexus.channels.asgi import HotRouter
from nexus.channels.cli import client as cli_client
from nexus.channels.cli.server import cli_routes
from nexus.core.audit import Auditor
from nexus.core.authorization import ALLOW_ALL, AllowAll
from nexus.core.catalog import Catalog
from nexus.core.identity import AnonymousAuthenticator, ApiKeyAuthenticator, Authenticator, new_api_key
from nexus.core.pipeline import Pipeline
from nexus.core.ratelimit import Limiter, NoLimit, RateLimiter
from nexus.core.telemetry import NoopMeter, SystemClock
from nexus.core.types import AuditRecord, Channel, Decision, Invocation, Outcome, WorkflowInfo
from nexus.workflow import AsyncLocalRuntime, WorkflowBuilder

MAX_BODY = 4096


class HideSecret:
    """A policy that hides the workflow named "secret" from everyone."""

    def decide(self, invocation: Invocation, workflow: WorkflowInfo | None) -> Decision:
        if workflow is not None and workflow.name == "secret":
            return Decision(allowed=False, reason="hidden by test policy", visible=False)
        return ALLOW_ALL


def catalog() -> Catalog:
    result = Catalog()
    add = WorkflowBuilder().add_input("a", int, description="First").add_input("b", int)
    result.register(
        "add", add.add_node("PythonCodeNode", "add", {"code": "result = a + b"}).build(), tags=["math"]
    )
    typed = WorkflowBuilder().add_input("verbose", bool).add_input("ratio", float).add_input("items", list)
    typed.add_node("PythonCodeNode", "echo", {"code": "result = [verbose, ratio, items]"})
    result.register("typed", typed.build(), description="Echo typed inputs")
    fail = WorkflowBuilder().add_input("reason", str)
    result.register(
        "explode", fail.add_node("PythonCodeNode", "explode", {"code": "raise ValueError(reason)"}).build()
    )
    secret = WorkflowBuilder().add_input("n", int).add_node("PythonCodeNode", "noop", {"code": "result = n"})
    result.register("secret", secret.build())
    return result


@dataclass
class Rig:
    client: httpx2.AsyncClient
    audit: MemoryAuditSink
    keys: MemoryKeyStore

    async def issue_key(self) -> str:
        issued = new_api_key("tester", (), SystemClock())
        await self.keys.add(issued.key)
        return issued.plaintext

    async def records(self) -> list[AuditRecord]:
        return list(await self.audit.query())


async def always_ready() -> bool:
    return True


@contextlib.asynccontextmanager
async def rig(*, auth: bool = False, rate_limit: int | None = None) -> AsyncIterator[Rig]:
    clock = SystemClock()
    audit, keys, counters = MemoryAuditSink(), MemoryKeyStore(), MemoryCounterStore()
    authenticator: Authenticator = (
        ApiKeyAuthenticator(keys, clock, cache_ttl_s=0) if auth else AnonymousAuthenticator()
    )
    limiter: Limiter = RateLimiter(counters, rate_limit) if rate_limit else NoLimit()
    pipeline = Pipeline(
        catalog=catalog(),
        authenticator=authenticator,
        authorizer=HideSecret() if not auth else AllowAll(),
        limiter=limiter,
        auditor=Auditor(audit, clock),
        meter=NoopMeter(),
        clock=clock,
        runtime=AsyncLocalRuntime(),
    )
    options = http.HttpOptions(
        max_body_bytes=MAX_BODY,
        docs_enabled=False,
        metrics_path="/metrics",
        render_metrics=None,
        is_ready=always_ready,
        auth_enabled=auth,
        title="t",
        version="0",
    )
    app = HotRouter(cli_routes(pipeline, options))
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://test/cli/v1") as client:
        try:
            yield Rig(client, audit, keys)
        finally:
            await counters.close()


async def run(r: Rig, name: str, params: Any, token: str | None = None) -> httpx2.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return await r.client.post(f"/workflows/{name}/run", json={"params": params}, headers=headers)


def test_the_client_prefix_is_the_servers() -> None:
    assert cli_client.PREFIX == http.CLI_PREFIX


async def test_run_coerces_raw_strings_by_the_input_schema_and_returns_the_rest_document() -> None:
    async with rig() as r:
        response = await run(r, "add", {"a": "2", "b": "40"})
        assert response.status_code == 200
        document = response.json()
        assert document["workflow"] == "add"
        assert document["outputs"] == {"add": {"result": 42}}
        assert isinstance(document["run_id"], str)
        assert isinstance(document["duration_ms"], int | float)
        assert response.headers["x-request-id"]
        [record] = await r.records()
        assert (record.channel, record.workflow, record.outcome) == (Channel.CLI, "add", Outcome.SUCCESS)


async def test_booleans_numbers_and_json_arrays_arrive_typed() -> None:
    async with rig() as r:
        response = await run(r, "typed", {"verbose": "yes", "ratio": "0.25", "items": '[1, "two"]'})
        assert response.status_code == 200
        assert response.json()["outputs"] == {"echo": {"result": [True, 0.25, [1, "two"]]}}


async def test_an_uncoercible_value_is_rejected_by_schema_validation_with_a_precise_message() -> None:
    async with rig() as r:
        response = await run(r, "add", {"a": "two", "b": "1"})
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "invalid_input"
        assert "two" in problem["detail"]
        [record] = await r.records()
        assert record.outcome == Outcome.INVALID_INPUT


async def test_an_unknown_parameter_name_is_rejected_not_dropped() -> None:
    async with rig() as r:
        response = await run(r, "add", {"a": "1", "b": "2", "c": "3"})
        assert response.status_code == 422
        assert "c" in response.json()["detail"]


async def test_a_hidden_workflow_answers_exactly_like_a_missing_one() -> None:
    async with rig() as r:
        hidden = await run(r, "secret", {"n": "1"})
        missing = await run(r, "nosuch", {"n": "1"})
        assert hidden.status_code == missing.status_code == 404
        strip = {"request_id", "instance", "detail"}
        assert {k: v for k, v in hidden.json().items() if k not in strip} == {
            k: v for k, v in missing.json().items() if k not in strip
        }
        assert hidden.json()["detail"].replace("secret", "X") == missing.json()["detail"].replace(
            "nosuch", "X"
        )


async def test_without_credentials_the_answer_is_401_whatever_the_params_or_workflow() -> None:
    async with rig(auth=True) as r:
        for name, params in [("add", {"a": "oops"}), ("nosuch", {}), ("add", {"a": "1", "b": "2"})]:
            response = await run(r, name, params)
            assert response.status_code == 401
            assert response.json()["code"] == "not_authenticated"
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_bearer_api_key_authenticates_the_cli_channel() -> None:
    async with rig(auth=True) as r:
        token = await r.issue_key()
        response = await run(r, "add", {"a": "1", "b": "2"}, token=token)
        assert response.status_code == 200
        assert response.json()["outputs"]["add"]["result"] == 3


async def test_a_failing_node_is_named_in_the_problem() -> None:
    async with rig() as r:
        response = await run(r, "explode", {"reason": "boom"})
        assert response.status_code == 422
        problem = response.json()
        assert (problem["code"], problem["node_id"]) == ("workflow_failed", "explode")


async def test_the_rate_limit_applies_to_the_cli_channel_with_retry_after() -> None:
    async with rig(rate_limit=1) as r:
        assert (await run(r, "add", {"a": "1", "b": "1"})).status_code == 200
        limited = await run(r, "add", {"a": "1", "b": "1"})
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["retry_after"] >= 1


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"params": [1]}', b'{"params": {}, "inputs": {}}', b'{"inputs": {"a": 1}}'],
)
async def test_a_malformed_body_is_invalid_input(body: bytes) -> None:
    async with rig() as r:
        response = await r.client.post("/workflows/add/run", content=body)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_input"


async def test_an_oversized_body_is_refused_before_parsing() -> None:
    async with rig() as r:
        response = await run(r, "add", {"a": "1" * (MAX_BODY + 1), "b": "1"})
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"


async def test_an_empty_body_means_no_params_so_required_inputs_are_named() -> None:
    async with rig() as r:
        response = await r.client.post("/workflows/add/run", content=b"")
        assert response.status_code == 422
        assert "a" in response.json()["detail"]


async def test_listing_shows_only_visible_workflows_on_the_cli_channel() -> None:
    async with rig() as r:
        response = await r.client.get("/workflows")
        assert response.status_code == 200
        names = [item["name"] for item in response.json()["workflows"]]
        assert names == ["add", "explode", "typed"]
        [record] = await r.records()
        assert record.channel == Channel.CLI


async def test_describe_returns_the_input_schema_and_hides_what_policy_hides() -> None:
    async with rig() as r:
        response = await r.client.get("/workflows/add")
        assert response.status_code == 200
        info = response.json()
        assert info["tags"] == ["math"]
        assert info["input_schema"]["properties"]["a"] == {"type": "integer", "description": "First"}
        assert (await r.client.get("/workflows/secret")).status_code == 404
