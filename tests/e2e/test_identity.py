"""Identity flows, each one test body run on REST, CLI and MCP.

A login (password, with a TOTP second factor when due) yields a token for its channel; that token
is refused on the others; step-up, logout, replayed codes and forged or expired tokens behave the
same everywhere, and every refusal is audited with its reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from tests.e2e.conftest import CHANNELS, StartAuthApp
from tests.e2e.identity import PASSWORD, answer_mfa, channel_token, enroll_totp, login, post

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.enterprise.auth import MultiFactorAuth
from nexus.testing.clients import ChannelClient

ClientFactory = Callable[..., ChannelClient]
Configure = Callable[[Nexus], None]


@pytest.fixture
def identity_app(auth_app: StartAuthApp) -> Callable[..., Any]:
    """`await start(configure=None, **users)`: an auth-on app with users and the sensitive
    workflow `wire_money` (tagged sensitive_workflows), served in a thread."""

    async def start(configure: Configure | None = None, **users: list[str]) -> RunningNexus:
        def setup(app: Nexus) -> None:
            sensitive = app._catalog.get("add").workflow
            app.register("wire_money", sensitive, description="Sensitive", tags=["sensitive_workflows"])
            if configure is not None:
                configure(app)

        return await auth_app(setup, users=users or None)

    return start


def with_totp(app: Nexus) -> None:
    app.auth.mfa = MultiFactorAuth(
        methods=["totp"], required_for=["api", "cli", "mcp"], bypass_roles=["system"], session_binding=True
    )


async def audited(server: RunningNexus, workflow: str) -> list[tuple[str, str, str | None, str]]:
    """Audit records of calls to `workflow`. MCP refuses a bad token at transport, on the
    session's first request (initialize, audited as "*"), so those count as calls to it too."""
    records = await server.app.audit_log()
    return [
        (r.channel.value, r.outcome.value, r.error_code, r.reason)
        for r in records
        if r.workflow == workflow or (r.channel is Channel.MCP and r.workflow == "*" and workflow != "_auth")
    ]


async def test_password_and_totp_login_gives_a_token_that_works_on_its_channel(
    identity_app: Callable[..., Any], channel: Channel, client: ClientFactory
) -> None:
    server = await identity_app(with_totp)
    secret, _ = await enroll_totp(server, channel, "alice")
    await asyncio.sleep(0)
    first = await login(server, channel, "alice")
    assert (first.status, first.code) == (401, "mfa_required"), first.body
    assert "totp" in first.body["methods"]
    # The code used at enrollment is spent: the next login needs the next step's code.
    code = pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30))
    grant = await answer_mfa(server, channel, first.body["challenge_id"], code)
    assert grant.status == 200, grant.body
    assert grant.body["channel"] == channel.value
    reply = await client(channel, server, grant.body["access_token"]).execute("add", {"a": 1, "b": 2})
    assert reply.ok, reply
    assert reply.body["outputs"] == {"add": {"result": 3}}
    steps = await audited(server, "_auth")
    assert ("api" if channel is Channel.MCP else channel.value, "success", None) in [s[:3] for s in steps]
    assert any(s[1] == "unauthenticated" and s[2] == "mfa_required" for s in steps)


async def test_a_replayed_totp_code_is_refused_and_audited(
    identity_app: Callable[..., Any], channel: Channel
) -> None:
    server = await identity_app(with_totp)
    secret, _ = await enroll_totp(server, channel, "alice")
    code = pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30))
    first = await login(server, channel, "alice")
    assert (await answer_mfa(server, channel, first.body["challenge_id"], code)).status == 200
    second = await login(server, channel, "alice")
    replay = await answer_mfa(server, channel, second.body["challenge_id"], code)
    assert (replay.status, replay.code) == (401, "not_authenticated"), replay.body
    assert "already used" in replay.body["detail"]
    steps = await audited(server, "_auth")
    assert any(s[1] == "unauthenticated" and "already used" in s[3] for s in steps)


PAIRS = [(minted, used) for minted in CHANNELS for used in CHANNELS if minted is not used]


@pytest.mark.parametrize(("channel", "other"), PAIRS, ids=[f"{a.value}-token-on-{b.value}" for a, b in PAIRS])
async def test_a_token_minted_for_one_channel_is_refused_on_another(
    identity_app: Callable[..., Any], channel: Channel, other: Channel, client: ClientFactory
) -> None:
    server = await identity_app()
    grant = await login(server, channel, "alice")
    assert grant.status == 200, grant.body
    reply = await client(other, server, grant.body["access_token"]).execute("add", {"a": 1, "b": 2})
    assert reply.outcome is Outcome.UNAUTHENTICATED, reply
    records = await audited(server, "add")
    assert (
        other.value,
        "unauthenticated",
        "not_authenticated",
        "The token is for another channel.",
    ) in records


async def test_one_session_yields_a_token_per_channel_and_logout_ends_them_all(
    identity_app: Callable[..., Any], channel: Channel, client: ClientFactory
) -> None:
    server = await identity_app()
    grant = await login(server, channel, "alice")
    session = grant.body["session_token"]
    tokens = {c: (await channel_token(server, session, c)).body["access_token"] for c in CHANNELS}
    for c, token in tokens.items():
        assert (await client(c, server, token).execute("add", {"a": 2, "b": 2})).ok
    bye = await post(
        server, "/cli/v1/auth/logout" if channel is Channel.CLI else "/auth/logout", token=session
    )
    assert bye.status == 200, bye.body
    for c, token in tokens.items():
        reply = await client(c, server, token).execute("add", {"a": 2, "b": 2})
        assert reply.outcome is Outcome.UNAUTHENTICATED, (c, reply)
    again = await channel_token(server, session, channel)
    assert again.status == 401
    records = await audited(server, "add")
    ended = [r for r in records if r[1] == "unauthenticated"]
    assert {r[0] for r in ended} == {"api", "cli", "mcp"}
    assert all("session has ended" in r[3] for r in ended), ended


async def test_sensitive_calls_need_a_recent_authentication_and_pass_after_reauth(
    identity_app: Callable[..., Any], channel: Channel, client: ClientFactory
) -> None:
    def configure(app: Nexus) -> None:
        app.auth.require_reauth_for = ["admin", "sensitive_workflows"]
        app.auth.reauth_max_age = 1

    server = await identity_app(configure)
    grant = await login(server, channel, "alice")
    token, session = grant.body["access_token"], grant.body["session_token"]
    caller = client(channel, server, token)
    assert (await caller.execute("wire_money", {"a": 1, "b": 1})).ok  # fresh login: recent enough
    await asyncio.sleep(1.2)
    assert (await caller.execute("add", {"a": 1, "b": 1})).ok  # not sensitive: no step-up
    refused = await caller.execute("wire_money", {"a": 1, "b": 1})
    assert (refused.outcome, refused.code) == (Outcome.UNAUTHENTICATED, "reauth_required"), refused
    prefix = "/cli/v1" if channel is Channel.CLI else ""
    reauth = await post(server, f"{prefix}/auth/reauth", {"password": PASSWORD}, token=session)
    assert reauth.status == 200, reauth.body
    assert (await caller.execute("wire_money", {"a": 1, "b": 1})).ok
    records = await audited(server, "wire_money")
    assert any(r[2] == "reauth_required" and "younger than 1 s" in r[3] for r in records)


async def test_a_step_up_cannot_be_made_with_an_api_key(
    identity_app: Callable[..., Any], channel: Channel, client: ClientFactory
) -> None:
    def configure(app: Nexus) -> None:
        app.auth.require_reauth_for = ["sensitive_workflows"]

    server = await identity_app(configure)
    key = await server.app.create_api_key("robot")
    reply = await client(channel, server, key.plaintext).execute("wire_money", {"a": 1, "b": 1})
    assert (reply.outcome, reply.code) == (Outcome.UNAUTHENTICATED, "reauth_required"), reply
    assert (await client(channel, server, key.plaintext).execute("add", {"a": 1, "b": 1})).ok


def _forge(claims: dict[str, Any], kid: str) -> str:
    foreign = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return jwt.encode(claims, foreign, algorithm="EdDSA", headers={"kid": kid})


async def test_forged_and_expired_tokens_are_refused_with_their_reason(
    identity_app: Callable[..., Any], channel: Channel, client: ClientFactory
) -> None:
    def configure(app: Nexus) -> None:
        app.auth.access_token_duration = 1
        app.auth.token_leeway_seconds = 0

    server = await identity_app(configure)
    grant = await login(server, channel, "alice")
    token = grant.body["access_token"]
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = _forge({**claims, "sub": "local:admin", "exp": int(time.time()) + 3600}, header["kid"])
    unsigned = jwt.encode({**claims, "exp": int(time.time()) + 3600}, None, algorithm="none")
    assert (
        await client(channel, server, forged).execute("add", {"a": 1, "b": 1})
    ).outcome is Outcome.UNAUTHENTICATED
    assert (
        await client(channel, server, unsigned).execute("add", {"a": 1, "b": 1})
    ).outcome is Outcome.UNAUTHENTICATED
    await asyncio.sleep(1.6)
    expired = await client(channel, server, token).execute("add", {"a": 1, "b": 1})
    assert expired.outcome is Outcome.UNAUTHENTICATED, expired
    reasons = [r[3] for r in await audited(server, "add") if r[1] == "unauthenticated"]
    assert any("signature is invalid" in r for r in reasons), reasons
    assert any("algorithm is not accepted" in r or "malformed" in r for r in reasons), reasons
    assert any("expired" in r for r in reasons), reasons
