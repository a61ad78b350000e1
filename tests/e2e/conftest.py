"""One served app per test on ephemeral loopback ports, and a client for each channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel
from nexus.testing import client_for
from nexus.testing.clients import ChannelClient
from nexus.workflow.builder import WorkflowBuilder

CHANNELS = [Channel.API, Channel.CLI, Channel.MCP]


def build_app(state_url: str, *, api_port: int = 0, **options: Any) -> Nexus:
    app = Nexus(api_port=api_port, mcp_port=0, state_url=state_url, **options)
    add = WorkflowBuilder()
    add.add_input("a", int, description="First addend")
    add.add_input("b", int, description="Second addend")
    add.add_node("PythonCodeNode", "add", {"code": "result = a + b"})
    app.register("add", add.build(), description="Add two integers", tags=["math"])

    fail = WorkflowBuilder()
    fail.add_input("reason", str)
    fail.add_node("PythonCodeNode", "explode", {"code": "raise ValueError(reason)"})
    app.register("explode", fail.build(), description="Always fails")
    return app


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., RunningNexus]]:
    """Start an app (built with `build_app(**options)`) in a thread; stopped at teardown."""
    running: list[RunningNexus] = []

    def start(**options: Any) -> RunningNexus:
        app = build_app(f"sqlite:///{tmp_path}/state-{len(running)}.db", **options)
        server = app.start_in_thread()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


StartAuthApp = Callable[..., Awaitable[RunningNexus]]


@pytest.fixture
async def auth_app(tmp_path: Path) -> AsyncIterator[StartAuthApp]:
    """`await auth_app(configure=None, users={"alice": ["developer"]}, api_port=0, fast_hashing=True)`:
    an app with auth on, `configure(app)` applied, its users created (password `PASSWORD` of
    tests.e2e.identity), served in a thread; every app started is stopped at teardown."""
    from tests.e2e.identity import PASSWORD

    running: list[RunningNexus] = []

    async def start(
        configure: Callable[[Nexus], None] | None = None,
        *,
        users: Mapping[str, Sequence[str]] | None = None,
        api_port: int = 0,
        fast_hashing: bool = True,
    ) -> RunningNexus:
        app = build_app(f"sqlite:///{tmp_path}/auth-{len(running)}.db", api_port=api_port, enable_auth=True)
        if fast_hashing:
            app.auth.password_time_cost = 1
            app.auth.password_memory_kib = 1024
        if configure is not None:
            configure(app)
        for name, roles in ({"alice": ["developer"]} if users is None else users).items():
            await app.create_user(name, PASSWORD, roles=roles)
        server = await asyncio.to_thread(app.start_in_thread)
        running.append(server)
        return server

    yield start
    for server in running:
        await asyncio.to_thread(server.stop)


@pytest.fixture(params=CHANNELS, ids=[c.value for c in CHANNELS])
def channel(request: pytest.FixtureRequest) -> Channel:
    return request.param  # type: ignore[no-any-return]


def _client(channel: Channel, server: RunningNexus, token: str | None = None) -> ChannelClient:
    return client_for(channel, server.api_url, server.mcp_url, token)


@pytest.fixture
def client() -> Callable[..., ChannelClient]:
    """`client(channel, server, token=None)`: the channel's client for a served app."""
    return _client


@pytest.fixture
def channel_requests() -> Callable[..., dict[tuple[str, str, str], float]]:
    """`channel_requests(server)`: nexus_channel_requests_total by (channel, workflow, outcome)."""
    return _channel_requests


def _channel_requests(server: RunningNexus, token: str | None = None) -> dict[tuple[str, str, str], float]:
    """nexus_channel_requests_total by (channel, workflow, outcome), read from /metrics
    (with `token` when auth is on: the metrics endpoint then wants a key too)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    answer = httpx2.get(f"{server.api_url}/metrics", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    text = answer.text
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "nexus_channel_requests_total":
                labels = sample.labels
                counts[(labels["channel"], labels["workflow"], labels["outcome"])] = sample.value
    return counts
