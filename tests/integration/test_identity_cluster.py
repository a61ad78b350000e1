"""Identity across two nodes: users and signing keys in the real PostgreSQL, sessions in the real Redis.

A login on one node yields tokens the other node accepts; a logout on either ends them on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.testing import client_for
from nexus.workflow import WorkflowBuilder

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
PASSWORD = "a long enough password"


def _node(state_url: str, redis_url: str) -> Nexus:
    app = Nexus(api_port=0, mcp_port=0, state_url=state_url, enable_auth=True, redis_url=redis_url)
    app.auth.password_time_cost = 1
    app.auth.password_memory_kib = 1024
    app.auth.session_cache_seconds = 0  # every call asks Redis: logout is seen at once
    builder = WorkflowBuilder().add_input("a", int).add_input("b", int)
    app.register("add", builder.add_node("PythonCodeNode", "add", {"code": "result = a + b"}).build())
    return app


@pytest.fixture
def nodes(postgres_url: str, redis_url: str) -> Iterator[list[RunningNexus]]:
    servers: list[RunningNexus] = []
    yield servers
    for server in servers:
        server.stop()


def _post(server: RunningNexus, path: str, body: dict[str, Any], token: str | None = None) -> httpx2.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx2.post(f"{server.api_url}{path}", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize("channel", list(Channel), ids=[c.value for c in Channel])
async def test_a_login_on_one_node_works_on_the_other_and_a_logout_there_ends_it(
    postgres_url: str, redis_url: str, nodes: list[RunningNexus], channel: Channel
) -> None:
    first, second = _node(postgres_url, redis_url), _node(postgres_url, redis_url)
    await first.create_user("carol", PASSWORD, roles=["ops"])
    nodes.extend([first.start_in_thread(), second.start_in_thread()])
    login = _post(
        nodes[0], "/auth/login", {"username": "carol", "password": PASSWORD, "channel": channel.value}
    )
    assert login.status_code == 200, login.text
    token, session = login.json()["access_token"], login.json()["session_token"]

    on_second = client_for(channel, nodes[1].api_url, nodes[1].mcp_url, token)
    assert (await on_second.execute("add", {"a": 1, "b": 2})).ok

    assert _post(nodes[1], "/auth/logout", {}, token=session).status_code == 200
    on_first = client_for(channel, nodes[0].api_url, nodes[0].mcp_url, token)
    refused = await on_first.execute("add", {"a": 1, "b": 2})
    assert refused.outcome is Outcome.UNAUTHENTICATED, refused
    records = await first.audit_log()
    assert any("session has ended" in r.reason for r in records if r.outcome is Outcome.UNAUTHENTICATED)


async def test_a_login_challenge_begun_on_one_node_is_answered_on_the_other(
    postgres_url: str, redis_url: str, nodes: list[RunningNexus]
) -> None:
    import pyotp

    from nexus.enterprise.auth import MultiFactorAuth

    first, second = _node(postgres_url, redis_url), _node(postgres_url, redis_url)
    for app in (first, second):
        app.auth.mfa = MultiFactorAuth(methods=["totp"])
    await first.create_user("dana", PASSWORD)
    nodes.extend([first.start_in_thread(), second.start_in_thread()])
    begun = _post(nodes[0], "/auth/login", {"username": "dana", "password": PASSWORD})
    assert begun.json()["code"] == "mfa_enrollment_required"
    challenge = begun.json()["challenge_id"]
    enrolled = _post(nodes[1], "/auth/mfa/enroll", {"challenge_id": challenge, "method": "totp"})
    assert enrolled.status_code == 200, enrolled.text
    code = pyotp.TOTP(enrolled.json()["secret"]).now()
    done = _post(nodes[0], "/auth/mfa/activate", {"challenge_id": challenge, "code": code})
    assert done.status_code == 200, done.text
    assert len(done.json()["recovery_codes"]) == 10
