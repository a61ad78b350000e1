"""Logging in the way each channel's users do, for the identity e2e tests.

API clients and MCP hosts log in over HTTP (`/auth/login`, naming `mcp` as the channel for an MCP
token); CLI users log in at the CLI channel's own routes (`/cli/v1/auth/...`), which `nexus login`
calls. Each returns the grant document, or the problem document of a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2
import pyotp

from nexus import RunningNexus
from nexus.core.types import Channel

PASSWORD = "correct horse battery staple"


@dataclass
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def code(self) -> str | None:
        return self.body.get("code")


def _prefix(channel: Channel) -> str:
    return "/cli/v1" if channel is Channel.CLI else ""


async def post(
    server: RunningNexus, path: str, body: dict[str, Any] | None = None, token: str | None = None
) -> Answer:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(base_url=server.api_url, timeout=30) as http:
        response = await http.post(path, json=body or {}, headers=headers)
    return Answer(response.status_code, response.json())


async def login(server: RunningNexus, channel: Channel, username: str, password: str = PASSWORD) -> Answer:
    body: dict[str, Any] = {"username": username, "password": password}
    if channel is Channel.MCP:
        body["channel"] = "mcp"
    return await post(server, f"{_prefix(channel)}/auth/login", body)


async def answer_mfa(
    server: RunningNexus, channel: Channel, challenge_id: str, code: str, method: str = "totp"
) -> Answer:
    body = {"challenge_id": challenge_id, "method": method, "code": code}
    return await post(server, f"{_prefix(channel)}/auth/mfa", body)


async def enroll_totp(
    server: RunningNexus, channel: Channel, username: str, password: str = PASSWORD
) -> tuple[str, Answer]:
    """Log in, enroll TOTP in the enrollment challenge, activate it; returns (secret, grant)."""
    first = await login(server, channel, username, password)
    assert (first.status, first.code) == (401, "mfa_enrollment_required"), first.body
    challenge = first.body["challenge_id"]
    started = await post(
        server, f"{_prefix(channel)}/auth/mfa/enroll", {"challenge_id": challenge, "method": "totp"}
    )
    assert started.status == 200, started.body
    secret = started.body["secret"]
    assert started.body["provisioning_uri"].startswith("otpauth://totp/")
    done = await post(
        server,
        f"{_prefix(channel)}/auth/mfa/activate",
        {"challenge_id": challenge, "code": pyotp.TOTP(secret).now()},
    )
    assert done.status == 200, done.body
    return secret, done


async def channel_token(server: RunningNexus, session_token: str, channel: Channel) -> Answer:
    return await post(server, "/auth/token", {"channel": channel.value}, token=session_token)
