"""Two `nexus serve` nodes behind a real nginx: clustering on, state in the real PostgreSQL, sessions
and membership in the real Redis, health checks every 0.5 s.

One body per channel (REST with httpx2, CLI with the real `nexus` console script, MCP with the
official SDK client): each node's health detail lists both nodes, a login made through one node
works through the other and through nginx, and after `kill -9` of one node calls through nginx keep
succeeding while the survivor's health detail lists only itself within three intervals.

nginx runs from a prefix in the test's temporary directory (`daemon off`, 127.0.0.1, stopped by
PID). Without nginx the test is skipped, except under CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis.asyncio
from sqlalchemy.engine import make_url
from tests.e2e.identity import login
from tests.support import cluster_node

from nexus.core.types import Channel
from nexus.testing import client_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
INTERVAL_S = cluster_node.HEALTH_CHECK_INTERVAL_S
NEXUS = Path(sys.executable).with_name("nexus")
"""The `nexus` console script of this environment."""
USER = "operator"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listens(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Endpoint:
    """Where one channel set is reached: a node, or nginx in front of both."""

    api_url: str
    mcp_url: str


@dataclass
class Node(Endpoint):
    api_port: int
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """`kill -9`: no clean stop, no withdrawal from the cluster."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _start_node(tmp_path: Path, name: str, postgres_url: str, redis_url: str) -> Node:
    api, mcp = _free_port(), _free_port()
    env = {
        **os.environ,
        "NEXUS_STATE_URL": postgres_url,
        "NEXUS_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603  # our own console script and module
            [
                str(NEXUS),
                "serve",
                "tests.support.cluster_node:app",
                "--api-port",
                str(api),
                "--mcp-port",
                str(mcp),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Node(f"http://127.0.0.1:{api}", f"http://127.0.0.1:{mcp}/mcp", api, process, log)


def _wait_serving(node: Node) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert node.process.poll() is None, node.log.read_text()
        try:
            if httpx2.get(f"{node.api_url}/ready", timeout=2).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        assert time.monotonic() < deadline, f"the node did not start: {node.log.read_text()}"
        time.sleep(0.1)


def _nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "nginx must be installed when CI=true (bash scripts/services installs it)", pytrace=False
            )
        pytest.skip("no nginx (bash scripts/services installs it)")
    return found


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_body_buffer_size 1m;
    upstream api_nodes {{
{api_servers}
    }}
    upstream mcp_nodes {{
{mcp_servers}
    }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_buffering off;
    proxy_connect_timeout 2s;
    proxy_read_timeout 60s;
    proxy_next_upstream error timeout;
    server {{
        listen 127.0.0.1:{api_port};
        location / {{ proxy_pass http://api_nodes; }}
    }}
    server {{
        listen 127.0.0.1:{mcp_port};
        location / {{ proxy_pass http://mcp_nodes; }}
    }}
}}
"""


@dataclass
class Nginx(Endpoint):
    process: subprocess.Popen[bytes]
    prefix: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGQUIT)  # graceful: master and workers stop
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _start_nginx(binary: str, prefix: Path, nodes: list[Node]) -> Nginx:
    prefix.mkdir()
    api_port, mcp_port = _free_port(), _free_port()

    def servers(urls: list[str]) -> str:
        hosts = [url.removeprefix("http://").split("/", 1)[0] for url in urls]
        return "\n".join(f"        server {host} max_fails=1 fail_timeout=30s;" for host in hosts)

    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            prefix=prefix,
            api_servers=servers([node.api_url for node in nodes]),
            mcp_servers=servers([node.mcp_url for node in nodes]),
            api_port=api_port,
            mcp_port=mcp_port,
        )
    )
    process = subprocess.Popen(  # noqa: S603  # the Debian nginx with our own prefix and config
        [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not (_listens(api_port) and _listens(mcp_port)):
        assert process.poll() is None, (prefix / "error.log").read_text()
        assert time.monotonic() < deadline, "nginx did not start listening"
        time.sleep(0.05)
    return Nginx(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{mcp_port}/mcp", process, prefix)


@dataclass
class Cluster:
    nodes: list[Node]
    nginx: Nginx


async def _forget_membership(postgres_url: str, redis_url: str) -> None:
    """Drop the registry of this database's cluster (an earlier test's killed node may linger)."""
    name = make_url(postgres_url).database
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"nexus:cluster:{name}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def cluster(tmp_path: Path, postgres_url: str, redis_url: str) -> AsyncIterator[Cluster]:
    binary = _nginx_binary()
    if not NEXUS.exists():
        pytest.fail(f"the nexus console script is missing at {NEXUS}", pytrace=False)
    await _forget_membership(postgres_url, redis_url)
    admin = cluster_node.build(state_url=postgres_url, redis_url=redis_url)
    await admin.create_user(USER, "a long enough password", roles=["ops"])
    nodes: list[Node] = []
    nginx: Nginx | None = None
    try:
        nodes += [_start_node(tmp_path, name, postgres_url, redis_url) for name in ("first", "second")]
        for node in nodes:
            await asyncio.to_thread(_wait_serving, node)
        nginx = _start_nginx(binary, tmp_path / "nginx", nodes)
        yield Cluster(nodes, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        for node in nodes:
            node.stop()
        await _forget_membership(postgres_url, redis_url)


# -- each channel's health detail -------------------------------------------------------------------


async def _health(channel: Channel, where: Endpoint, token: str) -> dict[str, Any]:
    reply = await client_for(channel, where.api_url, where.mcp_url, token).health()
    assert reply.ok, reply
    document: dict[str, Any] = reply.body
    return document


def _listed(document: dict[str, Any]) -> dict[str, str]:
    """Node id -> API address, as a health detail lists the live nodes."""
    cluster = document["cluster"]
    assert cluster is not None, document
    assert cluster["nodes"] is not None, document
    return {node["id"]: node["api"] for node in cluster["nodes"]}


# -- the test -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", list(Channel), ids=[c.value for c in Channel])
async def test_two_nodes_behind_nginx_share_sessions_and_survive_the_loss_of_one(
    cluster: Cluster, channel: Channel
) -> None:
    first, second = cluster.nodes
    nginx = cluster.nginx
    grant = await login(first, channel, USER, "a long enough password")  # type: ignore[arg-type]  # needs api_url only
    assert grant.status == 200, grant.body
    token = grant.body["access_token"]
    api_grant = await login(first, Channel.API, USER, "a long enough password")  # type: ignore[arg-type]
    api_token = api_grant.body["access_token"]  # for the REST check of the timing below

    # Each node's health detail, on this channel, names itself and lists both nodes.
    details = [await _health(channel, node, token) for node in (first, second)]
    ids = [detail["cluster"]["node_id"] for detail in details]
    expected = {ids[0]: f"127.0.0.1:{first.api_port}", ids[1]: f"127.0.0.1:{second.api_port}"}
    assert ids[0] != ids[1]
    for detail in details:
        assert detail["ready"] is True
        assert _listed(detail) == expected
        assert all(node["ready"] is True and node["version"] for node in detail["cluster"]["nodes"])

    # The session made through the first node works through the second and through nginx.
    for where in (second, nginx, nginx):
        assert await _add(channel, where, token, 2, 3) == {"add": {"result": 5}}
    assert set(_listed(await _health(channel, nginx, token))) == set(ids)

    first.kill()
    killed = time.monotonic()
    # Calls go on through nginx while the cluster notices the loss.
    calls = asyncio.create_task(_calls(channel, nginx, token, count=4))

    # Three intervals after its last heartbeat (which came before the kill) the dead node is gone:
    # asked at once over REST, then on the channel itself, directly and through nginx.
    await asyncio.sleep(max(0.0, killed + 3 * INTERVAL_S + 0.1 - time.monotonic()))
    alone = {ids[1]: expected[ids[1]]}
    assert _listed(await _health(Channel.API, second, api_token)) == alone
    survivor = await _health(channel, second, token)
    assert survivor["cluster"]["node_id"] == ids[1]
    assert _listed(survivor) == alone
    assert _listed(await _health(channel, nginx, token)) == alone

    # Every call succeeded, and some did meet the dead node: nginx logged its refusals.
    await calls
    assert "Connection refused" in (nginx.prefix / "error.log").read_text()


async def _calls(channel: Channel, where: Endpoint, token: str, *, count: int) -> None:
    for a in range(count):
        outputs = await _add(channel, where, token, a, 1)
        assert outputs == {"add": {"result": a + 1}}


async def _add(channel: Channel, where: Endpoint, token: str, a: int, b: int) -> dict[str, Any]:
    """Run `add` on the channel: REST and MCP with their clients, the CLI with `nexus --url`."""
    if channel is Channel.CLI:
        code, out, err = await _nexus(
            "--url", where.api_url, "--token", token, "run", "add", "-p", f"a:={a}", "-p", f"b:={b}", "--json"
        )
        assert code == 0, err
        outputs: dict[str, Any] = json.loads(out)["outputs"]
        return outputs
    reply = await client_for(channel, where.api_url, where.mcp_url, token).execute("add", {"a": a, "b": b})
    assert reply.ok, reply
    outputs = reply.body["outputs"]
    return outputs


async def _nexus(*args: str) -> tuple[int, str, str]:
    """The `nexus` console script with these arguments: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        str(NEXUS), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()
