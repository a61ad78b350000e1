"""`nexus mcp` (MCP over stdio) on a clustered app: it serves its one local client with the
cluster's shared state, but it has no port of its own, so it never announces itself as a node."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest
import redis
from mcp import Client, StdioServerParameters

APP = """
from nexus import Nexus
from nexus.workflow.builder import WorkflowBuilder

app = Nexus(rate_limit=100)  # state and Redis from NEXUS_STATE_URL and NEXUS_REDIS_URL
app.api.enable_clustering = True
app.api.health_check_interval = 0.5
builder = WorkflowBuilder()
builder.add_input("a", int)
builder.add_node("PythonCodeNode", "echo", {"code": "result = a"})
app.register("echo", builder.build())
"""

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def test_a_stdio_server_of_a_clustered_app_serves_without_joining_the_cluster(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    (tmp_path / "clustered.py").write_text(APP)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "NEXUS_STATE_URL": postgres_url,
        "NEXUS_REDIS_URL": redis_url,
    }
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "nexus", "mcp", "clustered:app"], env=env, cwd=str(tmp_path)
    )
    database = postgres_url.rsplit("/", 1)[-1]
    members = f"nexus:cluster:{database}:expiry"
    with anyio.fail_after(60):
        async with Client(server, mode="legacy") as client:
            result = await client.call_tool("echo", {"a": 7})
            health = await client.read_resource("nexus://health")
            await anyio.sleep(1.5)  # three heartbeat intervals: a member would have announced itself
            announced = redis.Redis.from_url(redis_url).zcard(members)
    assert result.structured_content["outputs"] == {"echo": {"result": 7}}
    [content] = health.contents
    detail = json.loads(content.text)  # type: ignore[union-attr]  # a text resource
    assert detail["ready"] is True, detail
    assert "cluster" not in detail
    assert announced == 0
