"""LDAP login through a served app, against the real slapd, on every channel.

The directory decides the password and the roles (from groups); the app keeps a user record for
the second factor and the audit. A directory user enrolls TOTP like a local one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from tests.e2e.conftest import StartAuthApp
from tests.e2e.identity import answer_mfa, enroll_totp, login
from tests.support.ldap import PASSWORDS, LdapServer

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.enterprise.auth import ABACPolicyEngine, EnterpriseAuthProvider, MultiFactorAuth, RBACManager
from nexus.testing.clients import ChannelClient

ClientFactory = Callable[..., ChannelClient]


def _provider(ldap_server: LdapServer, **extra: Any) -> EnterpriseAuthProvider:
    settings = ldap_server.settings("starttls")
    options = {
        f"ldap_{f.name}": getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name != "url"
    }
    return EnterpriseAuthProvider(ldap_server=settings.url, enable_api_keys=True, **options, **extra)


@pytest.fixture
def ldap_app(auth_app: StartAuthApp, ldap_server: LdapServer) -> Callable[..., Any]:
    async def start(*, mfa: bool = False, configure: Callable[[Nexus], None] | None = None) -> RunningNexus:
        def setup(app: Nexus) -> None:
            app.auth.provider = _provider(ldap_server, enable_mfa=mfa)
            if mfa:
                app.auth.mfa = MultiFactorAuth(methods=["totp"], required_for=["api", "cli", "mcp"])
            if configure is not None:
                configure(app)

        return await auth_app(setup, users={})

    return start


async def test_a_directory_user_logs_in_with_roles_from_groups(
    ldap_app: Callable[..., Any], channel: Channel, client: ClientFactory
) -> None:
    server = await ldap_app()
    grant = await login(server, channel, "alice", PASSWORDS["alice"])
    assert grant.status == 200, grant.body
    assert sorted(grant.body["user"]["roles"]) == ["admin", "developer"]
    reply = await client(channel, server, grant.body["access_token"]).execute("add", {"a": 7, "b": 8})
    assert reply.ok, reply
    records = await server.app.audit_log(workflow="_auth")
    assert any(
        r.reason.startswith("logged in by ldap") and r.principal_id.startswith("ldap:") for r in records
    )


async def test_a_wrong_directory_password_and_an_unknown_user_look_the_same(
    ldap_app: Callable[..., Any], channel: Channel
) -> None:
    server = await ldap_app()
    wrong = await login(server, channel, "alice", "not-her-password")
    unknown = await login(server, channel, "nobody-here", "not-her-password")
    assert (wrong.status, wrong.code) == (unknown.status, unknown.code) == (401, "not_authenticated")
    assert wrong.body["detail"] == unknown.body["detail"]
    records = await server.app.audit_log(workflow="_auth")
    refused = [r for r in records if r.outcome is Outcome.UNAUTHENTICATED]
    assert {r.principal_id for r in refused} == {"login:alice", "login:nobody-here"}


async def test_a_directory_user_enrolls_and_answers_a_second_factor(
    ldap_app: Callable[..., Any], channel: Channel, client: ClientFactory
) -> None:
    server = await ldap_app(mfa=True)
    secret, _ = await enroll_totp(server, channel, "bob", PASSWORDS["bob"])
    first = await login(server, channel, "bob", PASSWORDS["bob"])
    assert (first.status, first.code) == (401, "mfa_required"), first.body
    code = pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30))
    grant = await answer_mfa(server, channel, first.body["challenge_id"], code)
    assert grant.status == 200, grant.body
    assert (await client(channel, server, grant.body["access_token"]).execute("add", {"a": 1, "b": 1})).ok


async def test_a_role_assigned_to_a_directory_group_and_a_policy_on_a_directory_attribute_decide(
    ldap_app: Callable[..., Any], channel: Channel, client: ClientFactory
) -> None:
    def authorization(app: Nexus) -> None:
        rbac = RBACManager()
        rbac.create_role("calculator", [f"{channel.value}:execute:math"])
        rbac.assign_role("calculator", group="developers")  # a directory group, mapped to no role here
        app.set_rbac_manager(rbac)
        abac = ABACPolicyEngine()
        abac.add_policy(
            "us_only", {"condition": "user.l in ['US']", "resources": ["math"], "effect": "permit"}
        )
        app.set_abac_engine(abac)

    server = await ldap_app(configure=authorization)
    outcomes = {}
    for uid in ("alice", "bob", "carol"):  # developers in the US, developers in the EU, no group
        grant = await login(server, channel, uid, PASSWORDS[uid])
        assert grant.status == 200, grant.body
        reply = await client(channel, server, grant.body["access_token"]).execute("add", {"a": 1, "b": 2})
        outcomes[uid] = reply.outcome
    assert outcomes == {"alice": Outcome.SUCCESS, "bob": Outcome.NOT_FOUND, "carol": Outcome.NOT_FOUND}
    reasons = {r.reason for r in await server.app.audit_log(workflow="add")}
    granted = f"allowed: role 'calculator' grants '{channel.value}:execute:math'"
    assert f"{granted}; policy 'us_only' (permit) satisfied" in reasons
    assert "denied: policy 'us_only' (permit) did not hold" in reasons
