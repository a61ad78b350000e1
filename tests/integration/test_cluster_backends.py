"""Nexus on its cluster backends: state in the real PostgreSQL, rate-limit counters in the real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.testing import client_for
from nexus.workflow import WorkflowBuilder

pytestmark = [pytest.mark.postgres]


def _app(state_url: str, **options: Any) -> Nexus:
    app = Nexus(api_port=0, mcp_port=0, state_url=state_url, **options)
    builder = WorkflowBuilder().add_input("a", int).add_input("b", int)
    app.register("add", builder.add_node("PythonCodeNode", "add", {"code": "result = a + b"}).build())
    return app


@pytest.fixture
def started() -> Iterator[list[RunningNexus]]:
    servers: list[RunningNexus] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.mark.parametrize("channel", list(Channel), ids=[c.value for c in Channel])
async def test_an_app_on_postgres_state_authenticates_executes_and_audits(
    postgres_url: str, channel: Channel, started: list[RunningNexus]
) -> None:
    app = _app(postgres_url, enable_auth=True)
    issued = await app.create_api_key("pg")
    server = app.start_in_thread()
    started.append(server)

    reply = await client_for(channel, server.api_url, server.mcp_url, issued.plaintext).execute(
        "add", {"a": 20, "b": 22}
    )

    assert reply.ok, reply
    assert reply.body["outputs"] == {"add": {"result": 42}}
    records = await app.audit_log(workflow="add")
    assert [(r.channel, r.outcome, r.principal_id) for r in records] == [
        (channel, Outcome.SUCCESS, f"key:{issued.key.key_id}")
    ]


@pytest.mark.redis
async def test_two_nodes_share_one_rate_limit_through_redis(
    postgres_url: str, redis_url: str, started: list[RunningNexus]
) -> None:
    first = _app(postgres_url, enable_auth=True, rate_limit=3, redis_url=redis_url)
    second = _app(postgres_url, enable_auth=True, rate_limit=3, redis_url=redis_url)
    token = (await first.create_api_key("shared")).plaintext
    started += [first.start_in_thread(), second.start_in_thread()]

    outcomes = []
    for server in (started[0], started[1], started[0], started[1]):
        reply = await client_for(Channel.API, server.api_url, server.mcp_url, token).execute(
            "add", {"a": 1, "b": 1}
        )
        outcomes.append(reply.outcome)

    assert outcomes == [Outcome.SUCCESS] * 3 + [Outcome.RATE_LIMITED]
