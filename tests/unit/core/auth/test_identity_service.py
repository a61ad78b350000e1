"""IdentityService: users, passwords, sessions, channel tokens and account linking.

Second factors are in test_second_factors.py.

Real adapters on memory stores; time moves only through the fake clock.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from tests.unit.core.auth.rig import (
    ADDRESS,
    PASSWORD,
    PHONE,
    IdentityRig,
    ScriptedSso,
    challenge_of,
    fast_hasher,
    mfa_everywhere,
)

from nexus.backends.auth.passwords import Argon2Hasher
from nexus.core.auth.model import ExternalIdentity, FactorKind
from nexus.core.auth.policy import MfaPolicy, SessionPolicy
from nexus.core.auth.service import SESSION_PREFIX
from nexus.core.types import Channel
from nexus.errors import (
    AuthenticationError,
    ConfigurationError,
    ForbiddenError,
    InvalidInputError,
    MfaEnrollmentRequiredError,
    MfaRequiredError,
)

Build = Callable[..., IdentityRig]
WRONG_LOGIN = "The username or password is wrong."
CHALLENGE_GONE = "The login challenge is unknown, used up or expired; log in again."


# -- users ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "username", ["", "-alice", ".alice", "al ice", "a" * 129, "ålice", "alice/x", "\uff41lice"]
)
async def test_create_user_refuses_a_username_outside_the_pattern(rig: IdentityRig, username: str) -> None:
    with pytest.raises(InvalidInputError, match="username"):
        await rig.service.create_user(username, PASSWORD)
    assert await rig.service.list_users() == []


@pytest.mark.parametrize("username", ["a", "A9", "alice.smith@example.com", "bob_o+tag-1", "z" * 128])
async def test_create_user_accepts_names_within_the_pattern(rig: IdentityRig, username: str) -> None:
    user = await rig.service.create_user(username, PASSWORD)
    assert user.username == username
    assert await rig.service.get_user(username) == user


@pytest.mark.parametrize("password", ["", "1234567", "x" * 1025])
async def test_create_user_refuses_a_password_too_short_or_too_long(rig: IdentityRig, password: str) -> None:
    with pytest.raises(InvalidInputError, match="8 to 1024 characters"):
        await rig.service.create_user("alice", password)
    assert await rig.service.get_user("alice") is None


@pytest.mark.parametrize("password", ["12345678", "é" * 1024])
async def test_passwords_of_8_and_1024_characters_are_accepted(rig: IdentityRig, password: str) -> None:
    await rig.service.create_user("alice", password)
    grant = await rig.login(password=password)
    assert grant.session.username == "alice"


@pytest.mark.parametrize("other", ["alice", "ALICE", "Alice"])
async def test_a_second_user_of_the_same_name_in_any_case_is_refused(rig: IdentityRig, other: str) -> None:
    first = await rig.add_user("alice")
    with pytest.raises(ConfigurationError, match="already exists"):
        await rig.service.create_user(other, "another password")
    assert await rig.service.list_users() == [first]


async def test_created_user_keeps_only_an_argon2id_hash_of_the_password(rig: IdentityRig) -> None:
    user = await rig.add_user("alice", roles=["analyst"])
    assert user.source == "local"
    assert user.roles == frozenset({"analyst"})
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert PASSWORD not in repr(user)


# -- password login ------------------------------------------------------------------------------


async def test_right_password_opens_a_session_and_a_token_for_the_login_channel(rig: IdentityRig) -> None:
    user = await rig.add_user("alice", roles=["analyst"])
    grant = await rig.login("alice", channel=Channel.CLI)
    assert grant.session.user_id == user.user_id
    assert grant.session.method == "password"
    assert grant.session.origin_channel is Channel.CLI
    assert grant.session.mfa_time is None
    assert grant.session_token.startswith(f"{SESSION_PREFIX}_{grant.session.session_id}_")
    assert grant.access.channel is Channel.CLI
    principal = await rig.service.authenticate(grant.access.token, Channel.CLI)
    assert principal.id == user.user_id
    assert principal.kind == "password"
    assert principal.roles == frozenset({"analyst"})
    assert principal.session_id == grant.session.session_id
    assert principal.auth_time == rig.clock.now()


async def test_login_name_is_case_insensitive(rig: IdentityRig) -> None:
    user = await rig.add_user("alice")
    assert (await rig.login("ALICE")).session.user_id == user.user_id


async def test_wrong_password_unknown_user_and_disabled_user_get_the_identical_refusal(
    rig: IdentityRig,
) -> None:
    await rig.add_user("alice")
    await rig.add_user("carol")
    await rig.service.update_user("carol", disabled=True)
    refusals = []
    for username, password in (("alice", "wrong password"), ("nobody", PASSWORD), ("carol", PASSWORD)):
        with pytest.raises(AuthenticationError) as raised:
            await rig.login(username, password)
        refusals.append(raised.value)
    assert {type(error) for error in refusals} == {AuthenticationError}
    assert {error.message for error in refusals} == {WRONG_LOGIN}
    assert {json.dumps(error.to_problem()) for error in refusals} == {json.dumps(refusals[0].to_problem())}


@pytest.mark.parametrize(("username", "password"), [("", PASSWORD), ("alice", ""), (None, PASSWORD)])
async def test_login_without_a_username_or_password_is_invalid_input(
    rig: IdentityRig, username: object, password: str
) -> None:
    await rig.add_user("alice")
    with pytest.raises(InvalidInputError):
        await rig.service.login(username, password, Channel.API, ADDRESS)  # type: ignore[arg-type]  # bad input on purpose


async def test_login_with_new_hasher_parameters_rehashes_the_stored_password(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    before = (await rig.stored_user("alice")).password_hash
    stronger = fast_hasher(time_cost=2)
    assert before is not None
    assert stronger.needs_rehash(before)

    upgraded = rig.service_with(hasher=stronger)
    await upgraded.login("alice", PASSWORD, Channel.API, ADDRESS)

    after = (await rig.stored_user("alice")).password_hash
    assert after is not None
    assert after != before
    assert ",t=2," in after
    assert stronger.verify(after, PASSWORD)
    assert not stronger.needs_rehash(after)
    await upgraded.login("alice", PASSWORD, Channel.API, ADDRESS)
    assert (await rig.stored_user("alice")).password_hash == after


async def test_a_hash_with_current_parameters_is_left_as_it_is(rig: IdentityRig) -> None:
    user = await rig.add_user("alice")
    await rig.login()
    assert (await rig.stored_user("alice")).password_hash == user.password_hash


async def test_a_wrong_password_never_rehashes(rig: IdentityRig) -> None:
    user = await rig.add_user("alice")
    with pytest.raises(AuthenticationError):
        await rig.service_with(hasher=fast_hasher(time_cost=2)).login(
            "alice", "wrong password", Channel.API, ADDRESS
        )
    assert (await rig.stored_user("alice")).password_hash == user.password_hash


async def test_set_password_replaces_the_old_one(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    await rig.service.set_password("alice", "a brand new secret")
    with pytest.raises(AuthenticationError):
        await rig.login(password=PASSWORD)
    assert (await rig.login(password="a brand new secret")).session.username == "alice"


# -- sessions and tokens -------------------------------------------------------------------------


async def test_tokens_stop_working_when_the_session_expires(build: Build) -> None:
    rig = build(sessions=SessionPolicy(session_duration_s=600, access_token_s=900))
    await rig.add_user("alice")
    grant = await rig.login()
    assert grant.session.expires_at == rig.clock.now() + timedelta(seconds=600)
    rig.clock.advance(599)
    assert await rig.service.authenticate(grant.access.token, Channel.API)
    rig.clock.advance(2)
    with pytest.raises(AuthenticationError, match="session has ended"):
        await rig.service.authenticate(grant.access.token, Channel.API)
    with pytest.raises(AuthenticationError, match="session has ended"):
        await rig.service.token(grant.session_token, Channel.API)


async def test_an_access_token_never_outlives_its_session(build: Build) -> None:
    rig = build(sessions=SessionPolicy(session_duration_s=1000, access_token_s=300))
    await rig.add_user("alice")
    grant = await rig.login()
    assert grant.access.lifetime_s == 300
    assert grant.access.expires_at == rig.clock.now() + timedelta(seconds=300)
    rig.clock.advance(800)
    late = await rig.service.token(grant.session_token, Channel.API)
    assert late.expires_at == grant.session.expires_at
    assert late.lifetime_s == 200
    claims = rig.codec.decode(late.token, audience="api", issuer="nexus")
    assert claims["exp"] == int(grant.session.expires_at.timestamp())


async def test_an_access_token_expires_on_its_own_time(build: Build) -> None:
    rig = build(sessions=SessionPolicy(access_token_s=60))
    await rig.add_user("alice")
    grant = await rig.login()
    rig.clock.advance(60 + 6)  # past the codec's 5 s leeway
    with pytest.raises(AuthenticationError, match="expired"):
        await rig.service.authenticate(grant.access.token, Channel.API)
    fresh = await rig.service.token(grant.session_token, Channel.API)
    assert await rig.service.authenticate(fresh.token, Channel.API)


async def test_cross_channel_sso_off_refuses_a_token_for_another_channel(build: Build) -> None:
    rig = build(sessions=SessionPolicy(cross_channel_sso=False))
    await rig.add_user("alice")
    grant = await rig.login(channel=Channel.API)
    with pytest.raises(ForbiddenError, match="Cross-channel sign-on is off"):
        await rig.service.token(grant.session_token, Channel.MCP)
    assert (await rig.service.token(grant.session_token, Channel.API)).channel is Channel.API


async def test_cross_channel_sso_on_mints_a_token_whose_audience_is_that_channel(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    grant = await rig.login(channel=Channel.API)
    mcp = await rig.service.token(grant.session_token, Channel.MCP)
    assert rig.codec.decode(mcp.token, audience="mcp", issuer="nexus")["aud"] == "mcp"
    principal = await rig.service.authenticate(mcp.token, Channel.MCP)
    assert principal.session_id == grant.session.session_id
    for other in (Channel.API, Channel.CLI):
        with pytest.raises(AuthenticationError, match="another channel"):
            await rig.service.authenticate(mcp.token, other)


async def test_reauthenticating_does_not_bypass_cross_channel_sso_off(build: Build) -> None:
    rig = build(sessions=SessionPolicy(cross_channel_sso=False))
    await rig.add_user("alice")
    grant = await rig.login(channel=Channel.API)
    with pytest.raises(ForbiddenError):
        await rig.service.reauthenticate(grant.session_token, PASSWORD, Channel.CLI, ADDRESS)
    again = await rig.service.reauthenticate(grant.session_token, PASSWORD, Channel.API, ADDRESS)
    assert again.access.channel is Channel.API


async def test_session_bound_mfa_covers_every_channel(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    grant = await rig.service.answer(await rig.mfa_challenge(), "totp", rig.totp_code(secret))
    cli = await rig.service.token(grant.session_token, Channel.CLI)
    assert (await rig.service.authenticate(cli.token, Channel.CLI)).id == grant.session.user_id


async def test_without_session_binding_each_channel_asks_for_its_own_second_factor(build: Build) -> None:
    rig = build(mfa=mfa_everywhere(session_binding=False))
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    grant = await rig.service.answer(await rig.mfa_challenge(), "totp", rig.totp_code(secret))
    assert grant.session.mfa_channels == frozenset({Channel.API})

    with pytest.raises(MfaRequiredError) as raised:
        await rig.service.token(grant.session_token, Channel.CLI)
    rig.next_step()
    cli = await rig.service.answer(challenge_of(raised.value), "totp", rig.totp_code(secret))

    assert cli.access.channel is Channel.CLI
    assert cli.session.session_id == grant.session.session_id
    assert cli.session.mfa_channels == frozenset({Channel.API, Channel.CLI})
    assert cli.session.auth_time == grant.session.auth_time
    assert (await rig.service.authenticate(cli.access.token, Channel.CLI)).id == grant.session.user_id
    assert await rig.service.authenticate(grant.access.token, Channel.API)
    assert (await rig.service.token(grant.session_token, Channel.CLI)).channel is Channel.CLI
    with pytest.raises(MfaRequiredError):
        await rig.service.token(grant.session_token, Channel.MCP)


async def test_a_token_for_a_channel_whose_mfa_is_missing_is_refused(build: Build) -> None:
    rig = build(mfa=MfaPolicy(methods=frozenset({FactorKind.TOTP}), required_for=frozenset({Channel.CLI})))
    await rig.add_user("alice")
    grant = await rig.login(channel=Channel.API)
    forged = rig.codec.encode(
        {
            "iss": "nexus",
            "sub": grant.session.user_id,
            "aud": "cli",
            "iat": int(rig.clock.now().timestamp()),
            "nbf": int(rig.clock.now().timestamp()),
            "exp": int(rig.clock.now().timestamp()) + 60,
            "jti": "x",
            "sid": grant.session.session_id,
        }
    )
    with pytest.raises(AuthenticationError, match="second factor"):
        await rig.service.authenticate(forged, Channel.CLI)


async def test_logout_with_the_session_token_revokes_every_token(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    grant = await rig.login()
    mcp = await rig.service.token(grant.session_token, Channel.MCP)
    assert await rig.service.logout(grant.session_token, Channel.API) == grant.session.user_id
    for token, channel in ((grant.access.token, Channel.API), (mcp.token, Channel.MCP)):
        with pytest.raises(AuthenticationError, match="session has ended"):
            await rig.service.authenticate(token, channel)
    with pytest.raises(AuthenticationError):
        await rig.service.token(grant.session_token, Channel.API)


async def test_logout_with_a_channel_token_revokes_the_session_and_its_other_tokens(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    grant = await rig.login(channel=Channel.API)
    cli = await rig.service.token(grant.session_token, Channel.CLI)
    assert await rig.service.logout(cli.token, Channel.CLI) == grant.session.user_id
    with pytest.raises(AuthenticationError):
        await rig.service.authenticate(grant.access.token, Channel.API)
    with pytest.raises(AuthenticationError):
        await rig.service.token(grant.session_token, Channel.API)
    stored = await rig.sessions.get(grant.session.session_id)
    assert stored is not None
    assert stored.revoked_at == rig.clock.now()


async def test_logout_leaves_the_users_other_sessions_alone(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    laptop, phone = await rig.login(), await rig.login()
    await rig.service.logout(laptop.session_token, Channel.API)
    assert await rig.service.authenticate(phone.access.token, Channel.API)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: s.revoke_sessions("alice"), id="revoke_sessions"),
        pytest.param(lambda s: s.set_password("alice", "a brand new secret"), id="set_password"),
        pytest.param(lambda s: s.update_user("alice", disabled=True), id="disable"),
        pytest.param(lambda s: s.update_user("alice", roles=["viewer"]), id="roles"),
        pytest.param(lambda s: s.delete_user("alice"), id="delete"),
    ],
)
async def test_changes_to_the_account_end_its_sessions(
    rig: IdentityRig, change: Callable[..., object]
) -> None:
    await rig.add_user("alice", roles=["admin"])
    grants = [await rig.login(), await rig.login(channel=Channel.CLI)]
    for grant in grants:  # warm the session cache
        await rig.service.authenticate(grant.access.token, grant.access.channel)
    await change(rig.service)  # type: ignore[misc]  # each lambda returns a coroutine
    for grant in grants:
        with pytest.raises(AuthenticationError):
            await rig.service.authenticate(grant.access.token, grant.access.channel)
        with pytest.raises(AuthenticationError):
            await rig.service.token(grant.session_token, Channel.API)


async def test_attribute_and_phone_changes_keep_sessions(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    grant = await rig.login()
    await rig.service.update_user("alice", attributes={"team": "blue"}, phone=PHONE, disabled=False)
    assert await rig.service.authenticate(grant.access.token, Channel.API)


async def test_revoke_sessions_counts_the_live_ones(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    await rig.login()
    await rig.login()
    assert await rig.service.revoke_sessions("alice") == 2
    assert await rig.service.revoke_sessions("alice") == 0


async def test_authenticate_refuses_a_session_token_as_bearer(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    grant = await rig.login()
    with pytest.raises(AuthenticationError, match="Exchange the session token"):
        await rig.service.authenticate(grant.session_token, Channel.API)


async def test_a_session_token_with_a_wrong_secret_is_refused(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    grant = await rig.login()
    forged = f"{SESSION_PREFIX}_{grant.session.session_id}_{secrets.token_urlsafe(32)}"
    for token in (forged, "nxs_", "nxs_abc", "nope", f"nxk_{grant.session.session_id}_x"):
        with pytest.raises(AuthenticationError):
            await rig.service.token(token, Channel.API)


async def test_authenticate_refuses_a_token_whose_subject_is_not_the_sessions_user(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    mallory = await rig.add_user("mallory")
    grant = await rig.login("alice")
    now = int(rig.clock.now().timestamp())
    claims = {
        "iss": "nexus",
        "sub": mallory.user_id,
        "aud": "api",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "x",
        "sid": grant.session.session_id,
    }
    with pytest.raises(AuthenticationError, match="session has ended"):
        await rig.service.authenticate(rig.codec.encode(claims), Channel.API)
    claims.pop("sid")
    claims["sub"] = grant.session.user_id
    with pytest.raises(AuthenticationError, match="session has ended"):
        await rig.service.authenticate(rig.codec.encode(claims), Channel.API)


async def test_authenticate_refuses_tokens_of_another_issuer(build: Build) -> None:
    rig = build()
    await rig.add_user("alice")
    grant = await rig.login()
    other = rig.service_with(sessions=SessionPolicy(issuer="someone-else"))
    with pytest.raises(AuthenticationError, match="another server"):
        await other.authenticate(grant.access.token, Channel.API)


async def test_with_a_session_cache_a_revocation_through_the_service_is_immediate(build: Build) -> None:
    rig = build(sessions=SessionPolicy(cache_s=60))
    await rig.add_user("alice")
    grant = await rig.login()
    assert await rig.service.authenticate(grant.access.token, Channel.API)
    await rig.service.logout(grant.session_token, Channel.API)
    with pytest.raises(AuthenticationError):
        await rig.service.authenticate(grant.access.token, Channel.API)


async def test_the_session_cache_bounds_how_long_another_nodes_revocation_takes(build: Build) -> None:
    rig = build(sessions=SessionPolicy(cache_s=60))
    await rig.add_user("alice")
    grant = await rig.login()
    assert await rig.service.authenticate(grant.access.token, Channel.API)
    await rig.service_with().logout(grant.session_token, Channel.API)  # another node, same stores
    assert await rig.service.authenticate(grant.access.token, Channel.API)  # still cached here
    rig.clock.advance(60)
    with pytest.raises(AuthenticationError):
        await rig.service.authenticate(grant.access.token, Channel.API)


async def test_without_a_session_cache_another_nodes_revocation_is_immediate(build: Build) -> None:
    rig = build(sessions=SessionPolicy(cache_s=0))
    await rig.add_user("alice")
    grant = await rig.login()
    assert await rig.service.authenticate(grant.access.token, Channel.API)
    await rig.service_with().logout(grant.session_token, Channel.API)
    with pytest.raises(AuthenticationError):
        await rig.service.authenticate(grant.access.token, Channel.API)


# -- external identities and SSO -----------------------------------------------------------------


def dora(roles: frozenset[str] = frozenset({"staff"}), **attributes: str) -> ExternalIdentity:
    return ExternalIdentity(
        source="oidc", subject="sub-123", username="dora", roles=roles, attributes=attributes
    )


async def test_link_external_creates_the_user_and_refreshes_roles_later(rig: IdentityRig) -> None:
    user = await rig.service.link_external(dora(team="red"))
    assert (user.user_id, user.username, user.source) == ("oidc:sub-123", "dora", "oidc")
    assert user.password_hash is None
    assert user.roles == frozenset({"staff"})
    again = await rig.service.link_external(dora(frozenset({"admin"}), team="blue"))
    assert again.user_id == user.user_id
    assert again.roles == frozenset({"admin"})
    assert dict(again.attributes) == {"team": "blue"}
    assert await rig.service.get_user("dora") == again
    assert len(await rig.service.list_users()) == 1


async def test_link_external_never_takes_over_a_local_account_of_the_same_name(rig: IdentityRig) -> None:
    local = await rig.add_user("dora")
    with pytest.raises(AuthenticationError, match="already taken"):
        await rig.service.link_external(dora())
    assert await rig.service.list_users() == [local]


async def test_an_external_user_has_no_local_password(rig: IdentityRig) -> None:
    await rig.service.link_external(dora())
    with pytest.raises(AuthenticationError, match=re.escape(WRONG_LOGIN)):
        await rig.login("dora", PASSWORD)
    with pytest.raises(ConfigurationError, match="no local password"):
        await rig.service.set_password("dora", PASSWORD)


async def sso_round(rig: IdentityRig, channel: Channel, return_to: str) -> dict[str, str]:
    url = await rig.service.begin_sso("oidc", channel, return_to)
    return {"state": url.rpartition("state=")[2]}


async def test_complete_sso_links_the_user_and_opens_a_session_for_the_channel_it_began_on(
    build: Build,
) -> None:
    """Unit test of the linking and state rules only, with a scripted provider."""
    idp = ScriptedSso(dora())
    rig = build(sso={"oidc": idp})
    assert rig.service.sso_protocols == ("oidc",)
    params = await sso_round(rig, Channel.CLI, "http://127.0.0.1:8765/done")
    grant, return_to = await rig.service.complete_sso("oidc", params)
    assert return_to == "http://127.0.0.1:8765/done"
    assert grant.session.method == "oidc"
    assert grant.access.channel is Channel.CLI
    assert grant.session.user_id == "oidc:sub-123"
    assert grant.session.roles == frozenset({"staff"})
    with pytest.raises(AuthenticationError, match="unknown or used"):
        await rig.service.complete_sso("oidc", params)


async def test_complete_sso_refreshes_roles_at_each_login(build: Build) -> None:
    """Unit test of the linking rules only, with a scripted provider."""
    idp = ScriptedSso(dora())
    rig = build(sso={"oidc": idp})
    await rig.service.complete_sso("oidc", await sso_round(rig, Channel.API, "/"))
    idp.next_identity = dora(frozenset({"admin"}))
    grant, _ = await rig.service.complete_sso("oidc", await sso_round(rig, Channel.API, "/"))
    assert grant.session.roles == frozenset({"admin"})


async def test_complete_sso_refuses_a_state_this_server_did_not_issue(build: Build) -> None:
    """Unit test of the state rules only: the provider hands back a return_to not made by begin_sso."""
    idp = ScriptedSso(dora())
    rig = build(sso={"oidc": idp})
    redirect = await idp.begin(return_to="https://evil.example/")
    with pytest.raises(AuthenticationError, match="not one this server issued"):
        await rig.service.complete_sso("oidc", {"state": redirect.state})
    assert await rig.service.list_users() == []


async def test_complete_sso_refuses_a_disabled_user_and_a_local_name_clash(build: Build) -> None:
    """Unit test of the linking rules only, with a scripted provider."""
    idp = ScriptedSso(dora())
    rig = build(sso={"oidc": idp})
    await rig.service.complete_sso("oidc", await sso_round(rig, Channel.API, "/"))
    await rig.service.update_user("dora", disabled=True)
    with pytest.raises(AuthenticationError, match="disabled"):
        await rig.service.complete_sso("oidc", await sso_round(rig, Channel.API, "/"))
    await rig.add_user("eve")
    idp.next_identity = ExternalIdentity(source="oidc", subject="sub-999", username="eve")
    with pytest.raises(AuthenticationError, match="already taken"):
        await rig.service.complete_sso("oidc", await sso_round(rig, Channel.API, "/"))


async def test_complete_sso_with_mfa_due_carries_return_to_in_the_challenge(build: Build) -> None:
    """Unit test of the state rules only, with a scripted provider."""
    rig = build(sso={"oidc": ScriptedSso(dora())}, mfa=mfa_everywhere())
    with pytest.raises(MfaEnrollmentRequiredError) as raised:
        await rig.service.complete_sso("oidc", await sso_round(rig, Channel.MCP, "/after"))
    assert raised.value.detail["return_to"] == "/after"
    challenge_id = challenge_of(raised.value)
    secret = (await rig.service.enroll(challenge_id, "totp")).details["secret"]
    grant, _ = await rig.service.activate(challenge_id, rig.totp_code(secret))
    assert grant.session.method == "oidc"
    assert grant.access.channel is Channel.MCP


async def test_an_unconfigured_sso_protocol_is_invalid_input(rig: IdentityRig) -> None:
    with pytest.raises(InvalidInputError, match="not configured"):
        await rig.service.begin_sso("saml", Channel.API, "/")


class _CountingHasher(Argon2Hasher):
    """The real hasher, noting how many of its calls run at the same moment."""

    def __init__(self) -> None:
        super().__init__(time_cost=3, memory_kib=4096)
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0

    def verify(self, encoded: str, password: str) -> bool:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)  # long enough that every call let through overlaps the others
            return super().verify(encoded, password)
        finally:
            with self._lock:
                self.running -= 1


async def test_a_burst_of_logins_hashes_at_most_two_passwords_at_once(rig: IdentityRig) -> None:
    await rig.add_user()
    hasher = _CountingHasher()
    service = rig.service_with(hasher=hasher)
    results = await asyncio.gather(
        *(service.login("alice", PASSWORD, Channel.API, f"10.0.0.{n}") for n in range(8)),
        return_exceptions=True,
    )
    assert all(not isinstance(r, BaseException) for r in results), results
    assert hasher.most == 2
