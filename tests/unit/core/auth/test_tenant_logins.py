"""Logins made for a tenant: only members get in, refusals look like a wrong password, and the
session (and every principal derived from it) carries the tenant it was made in.

Real adapters on memory stores; time moves only through the fake clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from tests.unit.core.auth.rig import (
    ADDRESS,
    PASSWORD,
    IdentityRig,
    ScriptedSso,
    challenge_of,
    mfa_everywhere,
)

from nexus.backends.auth.passwords import Argon2Hasher
from nexus.core.auth.model import ExternalIdentity
from nexus.core.auth.policy import ThrottlePolicy
from nexus.core.auth.service import Grant, LoginRefusedError
from nexus.core.types import Channel
from nexus.errors import (
    AccountLockedError,
    AuthenticationError,
    ConfigurationError,
    MfaEnrollmentRequiredError,
    MfaRequiredError,
    TenantSuspendedError,
)

Build = Callable[..., IdentityRig]
WRONG_LOGIN = "The username or password is wrong."
CHALLENGE_GONE = "The login challenge is unknown, used up or expired; log in again."


class _CountingHasher(Argon2Hasher):
    """The real (cheap) hasher, counting password checks."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_kib=1024)
        self.verified = 0

    def verify(self, encoded: str, password: str) -> bool:
        self.verified += 1
        return super().verify(encoded, password)


async def add_member(rig: IdentityRig, username: str = "alice", *tenants: str) -> None:
    await rig.service.create_user(username, PASSWORD, roles=["analyst"], tenants=tenants)


async def tenant_login(
    rig: IdentityRig, tenant_id: str | None, password: str = PASSWORD, username: str = "alice"
) -> Grant:
    return await rig.service.login(username, password, Channel.API, ADDRESS, tenant_id=tenant_id)


# -- membership --------------------------------------------------------------------------------------


async def test_a_login_to_a_tenant_the_user_is_no_member_of_looks_like_a_wrong_password(
    rig: IdentityRig,
) -> None:
    await add_member(rig, "alice", "acme")

    with pytest.raises(AuthenticationError) as wrong_password:
        await tenant_login(rig, "acme", password="not the password")
    with pytest.raises(AuthenticationError) as not_a_member:
        await tenant_login(rig, "globex")

    assert isinstance(not_a_member.value, LoginRefusedError)
    assert not_a_member.value.message == wrong_password.value.message == WRONG_LOGIN
    assert json.dumps(not_a_member.value.to_problem()) == json.dumps(wrong_password.value.to_problem())
    assert (not_a_member.value.http_status, not_a_member.value.exit_code, not_a_member.value.mcp) == (
        wrong_password.value.http_status,
        wrong_password.value.exit_code,
        wrong_password.value.mcp,
    )
    assert not_a_member.value.audit_reason == "not a member of tenant globex"
    assert await rig.service.revoke_sessions("alice") == 0  # no session was opened


async def test_the_password_is_checked_before_membership_and_a_wrong_one_wins(build: Build) -> None:
    rig = build()
    hasher = _CountingHasher()
    rig.service = rig.service_with(hasher=hasher)
    await add_member(rig, "alice", "acme")
    hasher.verified = 0

    with pytest.raises(LoginRefusedError):
        await tenant_login(rig, "globex")
    after_refusal = hasher.verified
    with pytest.raises(AuthenticationError) as wrong_both:
        await tenant_login(rig, "globex", password="not the password")

    assert after_refusal == 1  # the refusal paid for the same password check a wrong password does
    assert type(wrong_both.value) is AuthenticationError  # the audit says "wrong password" here


async def test_refusals_for_a_foreign_tenant_count_towards_the_lock_like_wrong_passwords(
    build: Build,
) -> None:
    rig = build(throttle=ThrottlePolicy(per_pair=2))
    await add_member(rig, "alice", "acme")

    for _ in range(2):
        with pytest.raises(LoginRefusedError):
            await tenant_login(rig, "globex")

    with pytest.raises(AccountLockedError):
        await tenant_login(rig, "acme")


async def test_a_member_gets_a_session_in_the_tenant_with_the_users_tenants(rig: IdentityRig) -> None:
    await add_member(rig, "alice", "acme", "globex")

    grant = await rig.service.login("alice", PASSWORD, Channel.CLI, ADDRESS, tenant_id="acme")
    principal = await rig.service.authenticate(grant.access.token, Channel.CLI)

    assert (grant.session.tenant_id, grant.session.tenants) == ("acme", frozenset({"acme", "globex"}))
    assert (principal.tenant_id, principal.tenants) == ("acme", frozenset({"acme", "globex"}))
    assert principal.roles == frozenset({"analyst"})


async def test_the_platforms_route_logs_in_accounts_of_no_tenant_only(rig: IdentityRig) -> None:
    """A tenant's member could do nothing with a platform session (tenant credentials are refused
    on the platform's routes, and the session is no tenant's): the login itself is refused, as a
    wrong password would be, and the audit says why."""
    await add_member(rig, "alice", "acme")
    await add_member(rig, "root")

    with pytest.raises(LoginRefusedError, match=WRONG_LOGIN) as refused:
        await tenant_login(rig, None)
    assert refused.value.audit_reason == "a tenant member's login on the platform's route"
    platform = await tenant_login(rig, None, username="root")
    assert (platform.session.tenant_id, platform.session.tenants) == (None, frozenset())


async def test_a_user_of_no_tenant_is_refused_on_every_tenants_route(rig: IdentityRig) -> None:
    await add_member(rig, "root")

    with pytest.raises(LoginRefusedError, match=WRONG_LOGIN):
        await tenant_login(rig, "acme", username="root")


# -- second factors ----------------------------------------------------------------------------------


async def mfa_login(rig: IdentityRig, tenant_id: str | None) -> tuple[str, str]:
    """Enroll TOTP for alice (a login on acme's route, hers), then begin a login for `tenant_id`:
    the TOTP seed and the challenge asking for the code."""
    secret, _ = await rig.enroll_totp("alice", tenant_id="acme")
    with pytest.raises(MfaRequiredError) as raised:
        await tenant_login(rig, tenant_id)
    return secret, challenge_of(raised.value)


async def test_a_tenant_logins_second_factor_opens_a_session_in_that_tenant(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await add_member(rig, "alice", "acme")
    secret, challenge_id = await mfa_login(rig, "acme")

    grant = await rig.service.answer(challenge_id, "totp", rig.totp_code(secret), tenant_id="acme")

    assert (grant.session.tenant_id, grant.session.tenants) == ("acme", frozenset({"acme"}))
    assert grant.session.mfa_time is not None


async def test_a_login_challenge_is_unknown_on_another_route_and_stays_usable_on_its_own(
    build: Build,
) -> None:
    rig = build(mfa=mfa_everywhere())
    await add_member(rig, "alice", "acme", "globex")
    secret, challenge_id = await mfa_login(rig, "acme")
    code = rig.totp_code(secret)

    for elsewhere in ("globex", None):
        with pytest.raises(AuthenticationError, match=CHALLENGE_GONE):
            await rig.service.answer(challenge_id, "totp", code, tenant_id=elsewhere)
    grant = await rig.service.answer(challenge_id, "totp", code, tenant_id="acme")

    assert grant.session.tenant_id == "acme"


async def test_leaving_the_tenant_while_the_second_factor_is_pending_ends_that_login(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await add_member(rig, "alice", "acme")
    secret, challenge_id = await mfa_login(rig, "acme")

    await rig.service.update_user("alice", tenants=["globex"])

    with pytest.raises(AuthenticationError, match=CHALLENGE_GONE):
        await rig.service.answer(challenge_id, "totp", rig.totp_code(secret), tenant_id="acme")


async def test_an_enrollment_during_a_tenant_login_finishes_in_that_tenant(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await add_member(rig, "alice", "acme")
    with pytest.raises(AuthenticationError) as raised:
        await tenant_login(rig, "acme")
    challenge_id = challenge_of(raised.value)
    secret = str((await rig.service.enroll(challenge_id, "totp")).details["secret"])

    with pytest.raises(AuthenticationError, match=CHALLENGE_GONE):
        await rig.service.activate(challenge_id, rig.totp_code(secret), tenant_id="globex")
    grant, codes = await rig.service.activate(challenge_id, rig.totp_code(secret), tenant_id="acme")

    assert grant.session.tenant_id == "acme"
    assert codes


# -- single sign-on ----------------------------------------------------------------------------------


def dora() -> ExternalIdentity:
    return ExternalIdentity(source="oidc", subject="sub-123", username="dora", roles=frozenset({"staff"}))


async def sso_params(rig: IdentityRig, tenant_id: str | None = None) -> dict[str, str]:
    """Begin a sign-on on `tenant_id`'s route; the callback's parameters the provider sends back."""
    url = await rig.service.begin_sso("oidc", Channel.API, "/", tenant_id=tenant_id)
    return {"state": url.rpartition("state=")[2]}


class Admission:
    """Records the tenants a callback asked to admit; refuses those named in `refused`."""

    def __init__(self, *refused: str) -> None:
        self.asked: list[str] = []
        self._refused = refused

    async def __call__(self, tenant_id: str) -> None:
        self.asked.append(tenant_id)
        if tenant_id in self._refused:
            raise TenantSuspendedError(f"Tenant {tenant_id!r} is suspended; its calls are refused.")


async def test_single_sign_on_for_a_tenant_needs_membership_and_records_the_tenant(build: Build) -> None:
    """Unit test of the membership rule only, with a scripted provider."""
    rig = build(sso={"oidc": ScriptedSso(dora())})

    with pytest.raises(LoginRefusedError) as refused:
        await rig.service.complete_sso("oidc", await sso_params(rig, "acme"))
    await rig.service.update_user("dora", tenants=["acme"])
    grant, _ = await rig.service.complete_sso("oidc", await sso_params(rig, "acme"))

    assert refused.value.message == WRONG_LOGIN
    assert refused.value.audit_reason == "not a member of tenant acme"
    assert (grant.session.tenant_id, grant.session.tenants) == ("acme", frozenset({"acme"}))


async def test_a_sign_on_belongs_to_the_tenant_it_began_in_wherever_the_provider_calls_back(
    build: Build,
) -> None:
    """Unit test of the state rules only, with a scripted provider."""
    rig = build(sso={"oidc": ScriptedSso(dora())})
    await rig.service.complete_sso("oidc", await sso_params(rig))
    await rig.service.update_user("dora", tenants=["acme"])

    on_platform, _ = await rig.service.complete_sso("oidc", await sso_params(rig, "acme"))
    on_its_own, _ = await rig.service.complete_sso("oidc", await sso_params(rig, "acme"), tenant_id="acme")

    assert on_platform.session.tenant_id == on_its_own.session.tenant_id == "acme"


@pytest.mark.parametrize(
    ("begun_in", "called_back_on", "reason"),
    [
        ("acme", "globex", "single sign-on begun on another tenant's route, not this tenant's"),
        (None, "acme", "single sign-on begun on the platform's route, not this tenant's"),
    ],
)
async def test_a_callback_on_another_tenants_route_is_refused_before_any_account_is_touched(
    build: Build, begun_in: str | None, called_back_on: str, reason: str
) -> None:
    """Unit test of the state rules only, with a scripted provider."""
    rig = build(sso={"oidc": ScriptedSso(dora())})
    params = await sso_params(rig, begun_in)
    admit = Admission()

    with pytest.raises(LoginRefusedError) as refused:
        await rig.service.complete_sso("oidc", params, tenant_id=called_back_on, admit=admit)

    assert refused.value.message == "The sign-on is unknown, expired or already used; start again."
    assert refused.value.audit_reason == reason
    assert await rig.users.find("dora") is None  # no account linked by a refused callback
    assert admit.asked == []
    with pytest.raises(AuthenticationError):  # the state is spent: it cannot be replayed on its route
        await rig.service.complete_sso("oidc", params, tenant_id=begun_in)


async def test_the_tenant_a_sign_on_began_in_is_admitted_before_the_account_is_linked(build: Build) -> None:
    """Unit test of the admission hook only, with a scripted provider."""
    rig = build(sso={"oidc": ScriptedSso(dora())})
    admit = Admission("acme")

    with pytest.raises(TenantSuspendedError):
        await rig.service.complete_sso("oidc", await sso_params(rig, "acme"), admit=admit)
    await rig.service.complete_sso("oidc", await sso_params(rig), admit=admit)

    assert admit.asked == ["acme"]  # a platform sign-on has no tenant to admit
    assert (await rig.stored_user("dora")).user_id == "oidc:sub-123"


async def test_a_sign_on_whose_second_factor_is_due_finishes_only_on_its_tenants_route(
    build: Build,
) -> None:
    rig = build(mfa=mfa_everywhere(), sso={"oidc": ScriptedSso(dora())})
    with pytest.raises(AuthenticationError):
        await rig.service.complete_sso("oidc", await sso_params(rig))  # links dora
    await rig.service.update_user("dora", tenants=["acme"])
    with pytest.raises(MfaEnrollmentRequiredError) as due:
        await rig.service.complete_sso("oidc", await sso_params(rig, "acme"))
    challenge_id = challenge_of(due.value)
    secret = str((await rig.service.enroll(challenge_id, "totp")).details["secret"])

    with pytest.raises(AuthenticationError, match=CHALLENGE_GONE):
        await rig.service.activate(challenge_id, rig.totp_code(secret), tenant_id=None)
    grant, _ = await rig.service.activate(challenge_id, rig.totp_code(secret), tenant_id="acme")

    assert grant.session.tenant_id == "acme"
    assert grant.session.method == "oidc"


async def test_a_sign_on_refreshing_roles_keeps_the_users_tenants(build: Build) -> None:
    """Unit test of the linking rules only, with a scripted provider."""
    idp = ScriptedSso(dora())
    rig = build(sso={"oidc": idp})
    await rig.service.complete_sso("oidc", await sso_params(rig))
    await rig.service.update_user("dora", tenants=["acme"])
    idp.next_identity = ExternalIdentity(source="oidc", subject="sub-123", username="dora", roles=frozenset())

    grant, _ = await rig.service.complete_sso("oidc", await sso_params(rig, "acme"))

    assert grant.session.roles == frozenset()
    assert grant.session.tenants == frozenset({"acme"})


# -- membership administration -----------------------------------------------------------------------


async def test_create_and_update_user_keep_the_tenants_given_and_only_those(rig: IdentityRig) -> None:
    created = await rig.service.create_user("alice", PASSWORD, tenants=["acme", "globex", "acme"])
    kept = await rig.service.update_user("alice", roles=["viewer"])
    moved = await rig.service.update_user("alice", tenants=["initech"])
    emptied = await rig.service.update_user("alice", tenants=[])

    assert created.tenants == kept.tenants == frozenset({"acme", "globex"})
    assert moved.tenants == frozenset({"initech"})
    assert emptied.tenants == frozenset()
    assert (await rig.stored_user()).tenants == frozenset()


@pytest.mark.parametrize("tenants", [["Acme"], ["acme", "no spaces"], ["public"], ["pg_catalog"], "acme"])
async def test_invalid_tenant_ids_are_refused_and_nothing_is_stored(
    rig: IdentityRig, tenants: list[str] | str
) -> None:
    await rig.service.create_user("bob", PASSWORD, tenants=["acme"])

    with pytest.raises(ConfigurationError):
        await rig.service.create_user("alice", PASSWORD, tenants=tenants)
    with pytest.raises(ConfigurationError):
        await rig.service.update_user("bob", tenants=tenants)

    assert await rig.users.find("alice") is None
    assert (await rig.stored_user("bob")).tenants == frozenset({"acme"})


async def test_a_change_of_tenants_ends_the_users_sessions(rig: IdentityRig) -> None:
    await add_member(rig, "alice", "acme")
    grant = await tenant_login(rig, "acme")
    await rig.service.authenticate(grant.access.token, Channel.API)  # now cached

    await rig.service.update_user("alice", tenants=["acme", "globex"])

    with pytest.raises(AuthenticationError):
        await rig.service.authenticate(grant.access.token, Channel.API)
