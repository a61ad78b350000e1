"""Step-up: principals holding, or workflows tagged with, a listed name need a recent authentication."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from tests.unit.core.auth.rig import ADDRESS, PASSWORD, IdentityRig, ScriptedSso, challenge_of, mfa_everywhere

from nexus.core.auth.authenticator import StepUp
from nexus.core.auth.model import ExternalIdentity
from nexus.core.auth.policy import SessionPolicy
from nexus.core.auth.service import IdentityService
from nexus.core.types import Channel, Principal
from nexus.errors import (
    AuthenticationError,
    InvalidInputError,
    MfaRequiredError,
    ReauthenticationRequiredError,
)
from nexus.testing.clock import FakeClock

Build = Callable[..., IdentityRig]
MAX_AGE_S = 300
POLICY = SessionPolicy(require_reauth_for=frozenset({"admin", "payments"}), reauth_max_age_s=MAX_AGE_S)


def person(clock: FakeClock, *, roles: frozenset[str] = frozenset(), age_s: float = 0) -> Principal:
    return Principal(
        id="local:1", kind="password", roles=roles, auth_time=clock.now() - timedelta(seconds=age_s)
    )


def test_step_up_is_active_only_with_names_to_watch() -> None:
    clock = FakeClock()
    assert StepUp(POLICY, clock).active
    assert not StepUp(SessionPolicy(), clock).active


def test_calls_without_a_listed_role_or_tag_pass_without_a_reason() -> None:
    clock = FakeClock()
    step_up = StepUp(POLICY, clock)
    assert step_up.check(person(clock, roles=frozenset({"viewer"}), age_s=10**6), ["reports"]) is None
    assert step_up.check(Principal(id="key:1", kind="api_key"), []) is None


@pytest.mark.parametrize(
    ("roles", "tags", "reason"),
    [
        (frozenset({"admin"}), (), "step-up satisfied (admin)"),
        (frozenset(), ("payments",), "step-up satisfied (payments)"),
        (frozenset({"admin", "viewer"}), ("payments", "reports"), "step-up satisfied (admin, payments)"),
    ],
)
def test_a_listed_role_or_tag_with_a_recent_login_passes_with_the_reason(
    roles: frozenset[str], tags: tuple[str, ...], reason: str
) -> None:
    clock = FakeClock()
    assert StepUp(POLICY, clock).check(person(clock, roles=roles, age_s=MAX_AGE_S), tags) == reason


@pytest.mark.parametrize(("roles", "tags"), [(frozenset({"admin"}), ()), (frozenset(), ("payments",))])
def test_a_listed_role_or_tag_with_an_older_login_is_refused(
    roles: frozenset[str], tags: tuple[str, ...]
) -> None:
    clock = FakeClock()
    with pytest.raises(ReauthenticationRequiredError) as raised:
        StepUp(POLICY, clock).check(person(clock, roles=roles, age_s=MAX_AGE_S + 1), tags)
    assert raised.value.detail["max_age"] == MAX_AGE_S
    assert raised.value.code == "reauth_required"
    assert "re-authenticate" in raised.value.message


def test_an_api_key_principal_cannot_satisfy_step_up() -> None:
    clock = FakeClock()
    key = Principal(id="key:1", kind="api_key", roles=frozenset({"admin"}))
    with pytest.raises(ReauthenticationRequiredError, match="an API key cannot give one"):
        StepUp(POLICY, clock).check(key, [])


# -- through the identity service ---------------------------------------------------------------


async def principal_of(service: IdentityService, token: str) -> Principal:
    return await service.authenticate(token, Channel.API)


async def test_reauthenticating_with_the_password_refreshes_auth_time_and_the_call_passes(
    build: Build,
) -> None:
    rig = build(sessions=POLICY)
    step_up = StepUp(POLICY, rig.clock)
    await rig.add_user("alice", roles=["admin"])
    grant = await rig.login()
    assert step_up.check(await principal_of(rig.service, grant.access.token), []) is not None

    rig.clock.advance(MAX_AGE_S + 1)
    with pytest.raises(ReauthenticationRequiredError):
        step_up.check(await principal_of(rig.service, grant.access.token), [])

    again = await rig.service.reauthenticate(grant.session_token, PASSWORD, Channel.API, ADDRESS)

    assert again.session.session_id == grant.session.session_id
    assert again.session.auth_time == rig.clock.now()
    assert again.session_token == ""
    fresh = await principal_of(rig.service, again.access.token)
    assert fresh.auth_time == rig.clock.now()
    assert step_up.check(fresh, []) == "step-up satisfied (admin)"
    # Every token of the session carries the new proof: the principal is read from the session.
    assert step_up.check(await principal_of(rig.service, grant.access.token), []) is not None


async def test_a_wrong_reauthentication_password_changes_nothing(build: Build) -> None:
    rig = build(sessions=POLICY)
    await rig.add_user("alice", roles=["admin"])
    grant = await rig.login()
    rig.clock.advance(MAX_AGE_S + 1)
    with pytest.raises(AuthenticationError, match="username or password is wrong"):
        await rig.service.reauthenticate(grant.session_token, "wrong password", Channel.API, ADDRESS)
    with pytest.raises(InvalidInputError):
        await rig.service.reauthenticate(grant.session_token, None, Channel.API, ADDRESS)
    principal = await principal_of(rig.service, grant.access.token)
    assert principal.auth_time == grant.session.auth_time
    with pytest.raises(ReauthenticationRequiredError):
        StepUp(POLICY, rig.clock).check(principal, [])


async def test_reauthenticating_with_mfa_enrolled_needs_the_second_factor_too(build: Build) -> None:
    rig = build(sessions=POLICY, mfa=mfa_everywhere())
    step_up = StepUp(POLICY, rig.clock)
    await rig.add_user("alice", roles=["admin"])
    secret, _ = await rig.enroll_totp()
    grant = await rig.service.answer(await rig.mfa_challenge(), "totp", rig.totp_code(secret))
    rig.clock.advance(MAX_AGE_S + 1)

    with pytest.raises(MfaRequiredError) as raised:
        await rig.service.reauthenticate(grant.session_token, PASSWORD, Channel.API, ADDRESS)
    # The password alone refreshes nothing.
    with pytest.raises(ReauthenticationRequiredError):
        step_up.check(await principal_of(rig.service, grant.access.token), [])

    again = await rig.service.answer(challenge_of(raised.value), "totp", rig.totp_code(secret))

    assert again.session.auth_time == again.session.mfa_time == rig.clock.now()
    assert step_up.check(await principal_of(rig.service, again.access.token), []) is not None


async def test_reauthentication_needs_a_live_session(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    grant = await rig.login()
    await rig.service.logout(grant.session_token, Channel.API)
    with pytest.raises(AuthenticationError, match="session has ended"):
        await rig.service.reauthenticate(grant.session_token, PASSWORD, Channel.API, ADDRESS)


async def test_an_sso_user_reauthenticates_through_their_provider(build: Build) -> None:
    """Unit test of the service's rule only, with a scripted provider."""
    rig = build(sso={"saml": ScriptedSso(ExternalIdentity(source="saml", subject="n-1", username="sam"))})
    url = await rig.service.begin_sso("saml", Channel.API, "/")
    grant, _ = await rig.service.complete_sso("saml", {"state": url.rpartition("state=")[2]})
    with pytest.raises(AuthenticationError, match="through saml"):
        await rig.service.reauthenticate(grant.session_token, PASSWORD, Channel.API, ADDRESS)
