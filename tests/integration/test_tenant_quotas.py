"""Tenant quotas across a cluster: two Nexus processes, state in the real PostgreSQL, counters and
leases in the real Redis. Each quota is driven to exhaustion on each channel it governs, the
next call is refused (429 / exit 75 / MCP tool error with a retry hint), whichever node counted.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from tests.support import tenant_node

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.errors import ConfigurationError
from nexus.testing import client_for
from nexus.testing.clients import ChannelClient, TenantAddress

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Node:
    api_url: str
    mcp_url: str


@dataclass
class Cluster:
    app: Nexus
    nodes: tuple[Node, Node]

    def client(self, node: int, channel: Channel, key: str, tenant: str) -> ChannelClient:
        where = self.nodes[node]
        base = where.mcp_url.removesuffix("/mcp")
        address = TenantAddress(
            host=f"{tenant}.{tenant_node.BASE_DOMAIN}", prefix=tenant, mcp_url=f"{base}/t/{tenant}/mcp"
        )
        return client_for(channel, where.api_url, where.mcp_url, key, tenant=address)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def second_node(postgres_url: str, redis_url: str) -> Iterator[Node]:
    """`nexus serve tests.support.tenant_node:app` in its own process, on the same state and Redis."""
    api, mcp = _free_port(), _free_port()
    env = {
        **os.environ,
        "NEXUS_STATE_URL": postgres_url,
        "NEXUS_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(  # noqa: S603  # our own interpreter and module
        [
            sys.executable,
            "-m",
            "nexus",
            "serve",
            "tests.support.tenant_node:app",
            "--api-port",
            str(api),
            "--mcp-port",
            str(mcp),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    node = Node(f"http://127.0.0.1:{api}", f"http://127.0.0.1:{mcp}/mcp")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if httpx2.get(f"{node.api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the second node did not start"
            time.sleep(0.2)
        yield node
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        if process.stderr is not None:
            process.stderr.close()


@pytest_asyncio.fixture
async def cluster(
    postgres_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cluster]:
    monkeypatch.setenv("NEXUS_STATE_URL", postgres_url)
    monkeypatch.setenv("NEXUS_REDIS_URL", redis_url)
    app = tenant_node.build()
    await app.list_tenants()  # migrates the state before the second node opens it
    server: RunningNexus = await asyncio.to_thread(app.start_in_thread)
    try:
        yield Cluster(app, (Node(server.api_url, server.mcp_url), Node("", "")))
    finally:
        await asyncio.to_thread(server.stop)


async def tenant_with_key(app: Nexus, profile: str = "tiny") -> tuple[str, str]:
    """A fresh tenant (Redis windows outlive test runs: never reuse an id) and a key of it."""
    tenant = f"q{uuid.uuid4().hex[:10]}"
    await app.create_tenant(
        tenant, f"Tenant {tenant}", {"api_subdomain": tenant, "cli_prefix": tenant, "quota_profile": profile}
    )
    key = await app.create_api_key(f"{tenant}-key", tenants=[tenant])
    return tenant, key.plaintext


async def test_api_requests_per_hour_are_counted_once_across_both_nodes(
    cluster: Cluster, second_node: Node
) -> None:
    cluster.nodes = (cluster.nodes[0], second_node)
    tenant, key = await tenant_with_key(cluster.app)
    await asyncio.sleep(0.7)  # the second node's registry refresh
    for call in range(tenant_node.TINY["api_requests_per_hour"]):
        reply = await cluster.client(call % 2, Channel.API, key, tenant).execute("echo", {"text": str(call)})
        assert reply.ok, (call, reply)
    for node in (0, 1):
        refused = await cluster.client(node, Channel.API, key, tenant).execute("echo", {})
        assert refused.outcome is Outcome.RATE_LIMITED, refused
        assert refused.code == "quota_exceeded"
        assert refused.retry_after is not None
        assert refused.retry_after > 0
        assert refused.raw["headers"].get("retry-after") == str(refused.retry_after)
    # Only the API channel counts requests per hour: the CLI and MCP still answer.
    for channel in (Channel.CLI, Channel.MCP):
        other = await cluster.client(1, channel, key, tenant).execute("echo", {"text": "still"})
        assert other.ok, other
    usage = await _usage(cluster.nodes[0].api_url, cluster.app)
    assert usage.get((tenant, "api_requests_per_hour")) == tenant_node.TINY["api_requests_per_hour"]


@pytest.mark.parametrize("channel", list(Channel), ids=[c.value for c in Channel])
async def test_concurrent_workflows_are_limited_across_both_nodes(
    cluster: Cluster, second_node: Node, channel: Channel
) -> None:
    cluster.nodes = (cluster.nodes[0], second_node)
    tenant, key = await tenant_with_key(cluster.app)
    await asyncio.sleep(0.7)
    running = asyncio.create_task(
        cluster.client(0, Channel.MCP, key, tenant).execute("slow", {"seconds": 4.0})
    )
    await asyncio.sleep(1.5)  # the first run holds the tenant's one slot
    refused = await cluster.client(1, channel, key, tenant).execute("slow", {"seconds": 0.1})
    assert refused.outcome is Outcome.RATE_LIMITED, refused
    assert refused.code == "quota_exceeded"
    assert "concurrent_workflows" in str(refused.body)
    assert (await running).ok
    after = await cluster.client(1, channel, key, tenant).execute("slow", {"seconds": 0.1})
    assert after.ok, after  # the slot came back when the first run ended


async def test_mcp_tools_past_the_quota_is_an_error_when_enabling(cluster: Cluster) -> None:
    cluster.app.tenancy.manager.define_quota_profile("two_tools", {"mcp_tools": 1})
    with pytest.raises(ConfigurationError, match="mcp_tools"):
        await cluster.app.create_tenant("toolless", "Toolless", {"quota_profile": "two_tools"})
    assert await cluster.app.get_tenant("toolless") is None


async def _usage(api_url: str, app: Nexus) -> dict[tuple[str, str], float]:
    """nexus_tenant_resource_usage by (tenant, resource), scraped with a platform key."""
    key = (await app.create_api_key(f"scraper-{uuid.uuid4().hex[:6]}")).plaintext
    answer = httpx2.get(f"{api_url}/metrics", headers={"authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    usage: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == "nexus_tenant_resource_usage":
                usage[(sample.labels["tenant"], sample.labels["resource"])] = sample.value
    return usage


async def nexus_cli(api_url: str, tenant: str, home: Path, *args: str, stdin: str = "") -> tuple[int, str]:
    """The real `nexus` binary as a user runs it, with its own config directory (cached logins)."""
    env = {**os.environ, "NEXUS_URL": api_url, "NEXUS_TENANT": tenant, "XDG_CONFIG_HOME": str(home)}
    env.pop("NEXUS_TOKEN", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexus",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    return process.returncode or 0, out.decode()


async def test_cli_sessions_are_seats_shared_by_both_nodes(
    cluster: Cluster, second_node: Node, tmp_path: Path
) -> None:
    cluster.nodes = (cluster.nodes[0], second_node)
    tenant, _ = await tenant_with_key(cluster.app)
    await cluster.app.create_user("dana", "a long enough password", tenants=[tenant])
    await asyncio.sleep(0.7)
    first_home, second_home = tmp_path / "first", tmp_path / "second"
    login = ("login", "-u", "dana", "--password-stdin")
    code, out = await nexus_cli(
        cluster.nodes[0].api_url, tenant, first_home, *login, stdin="a long enough password\n"
    )
    assert code == 0, out
    # The tenant's one CLI seat is taken: a second CLI login, on the other node, is refused.
    code, out = await nexus_cli(
        second_node.api_url, tenant, second_home, *login, stdin="a long enough password\n"
    )
    assert code == 75, out
    assert "cli_sessions" in out
    # A session for another channel is no CLI session: the REST login still works.
    rest = httpx2.post(
        f"{second_node.api_url}/auth/login",
        json={"username": "dana", "password": "a long enough password"},
        headers={"host": f"{tenant}.{tenant_node.BASE_DOMAIN}"},
        timeout=30,
    )
    assert rest.status_code == 200, rest.text
    code, out = await nexus_cli(cluster.nodes[0].api_url, tenant, first_home, "logout")
    assert code == 0, out
    code, out = await nexus_cli(
        second_node.api_url, tenant, second_home, *login, stdin="a long enough password\n"
    )
    assert code == 0, out  # the seat came back at logout
    code, out = await nexus_cli(
        second_node.api_url, tenant, second_home, "run", "echo", "-p", "text=hi", "--json"
    )
    assert code == 0, out
