"""Identity decisions, made once for every channel: logins, second factors, sessions, channel tokens.

Channels call `IdentityService` for the login conversation and the pipeline calls it to turn a
bearer token into a principal. It owns accounts and single sign-on, and hands the password check to
`FirstFactor` (first_factor.py), the second factor to `SecondFactors` (factors.py), sessions and
tokens to `SessionKeeper` (sessions.py), and the check that an account is unchanged since its login
began to `AccountStanding` (standing.py). Protocol work (hashing, LDAP, OIDC, SAML, TOTP,
WebAuthn, JWT) happens behind the ports of `nexus.core.auth.ports`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from nexus.core.auth.factors import RECOVERY_CODES, Enrollment, SecondFactors
from nexus.core.auth.first_factor import FirstFactor
from nexus.core.auth.model import ExternalIdentity, Session, User
from nexus.core.auth.parts import IdentityParts
from nexus.core.auth.policy import MfaPolicy, SessionPolicy
from nexus.core.auth.ports import SsoProtocol
from nexus.core.auth.sessions import (
    SESSION_ENDED,
    SESSION_PREFIX,
    AccessToken,
    Grant,
    SessionKeeper,
    hash_token_secret,
)
from nexus.core.auth.standing import AccountStanding
from nexus.core.identity import check_tenant_ids
from nexus.core.ports import Clock
from nexus.core.types import Channel, Principal
from nexus.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidInputError,
    MfaEnrollmentRequiredError,
    MfaRequiredError,
)

__all__ = [
    "RECOVERY_CODES",
    "SESSION_PREFIX",
    "SSO_UNKNOWN",
    "AccessToken",
    "Enrollment",
    "Grant",
    "IdentityParts",
    "IdentityService",
    "LoginRefusedError",
    "check_password",
    "check_username",
    "hash_token_secret",
]

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
_MIN_PASSWORD = 8
_MAX_PASSWORD = 1024
_WRONG_LOGIN = "The username or password is wrong."
# What a callback on another tenant's route hears: the sign-on is unknown there.
SSO_UNKNOWN = "The sign-on is unknown, expired or already used; start again."


class LoginRefusedError(AuthenticationError):
    """A login refused for a reason the caller must not learn (the account is no member of the
    route's tenant, a sign-on begun on another tenant's route): it renders as a plain failed login;
    `audit_reason` is for the audit only."""

    def __init__(self, message: str, *, audit_reason: str) -> None:
        super().__init__(message)
        self.audit_reason = audit_reason


def _check_route(user: User, tenant_id: str | None) -> None:
    """A login belongs to the route it came by: a tenant's members on that tenant's route, and the
    platform's route only for accounts of no tenant (tenant credentials never work there)."""
    if tenant_id is None:
        if user.tenants:
            raise LoginRefusedError(
                _WRONG_LOGIN, audit_reason="a tenant member's login on the platform's route"
            )
    elif tenant_id not in user.tenants:
        raise _not_a_member(tenant_id)


def _not_a_member(tenant_id: str) -> LoginRefusedError:
    return LoginRefusedError(_WRONG_LOGIN, audit_reason=f"not a member of tenant {tenant_id}")


def _sso_elsewhere(begun_in: str | None) -> str:
    # Names neither tenant: the record is kept under the callback's tenant, and the other
    # tenant's name is not its business.
    where = "the platform's route" if begun_in is None else "another tenant's route"
    return f"single sign-on begun on {where}, not this tenant's"


def _read_sso_state(state: str) -> tuple[Channel, str, str | None]:
    """(channel, return_to, tenant) as `begin_sso` packed them into the pending state."""
    try:
        begun = json.loads(state)
        tenant = begun.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise TypeError("tenant")
        return Channel(begun["channel"]), str(begun["to"]), tenant
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AuthenticationError("The sign-on state is not one this server issued.") from exc


def check_username(username: object) -> str:
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        raise InvalidInputError(
            "A username is 1 to 128 letters, digits or . _ @ + -, starting with a letter or digit."
        )
    return username


def check_password(password: object) -> str:
    if not isinstance(password, str) or not _MIN_PASSWORD <= len(password) <= _MAX_PASSWORD:
        raise InvalidInputError(f"A password has {_MIN_PASSWORD} to {_MAX_PASSWORD} characters.")
    return password


class IdentityService:
    """Who may log in, what a login yields, and what a token stands for."""

    def __init__(
        self, parts: IdentityParts, clock: Clock, *, mfa: MfaPolicy, sessions: SessionPolicy
    ) -> None:
        self._p = parts
        self._clock = clock
        self.mfa = mfa
        self.policy = sessions
        self._sessions = SessionKeeper(
            parts.sessions,
            parts.tokens,
            clock,
            mfa=mfa,
            policy=sessions,
            seats=parts.seats,
            tenant_admission=parts.tenant_admission,
        )
        self._standing = AccountStanding(
            parts.users,
            parts.ephemeral,
            self._sessions,
            marker_ttl_s=max(sessions.session_duration_s, mfa.challenge_ttl_s),
        )
        self._factors = SecondFactors(
            parts, self._sessions, self._standing, clock, mfa=mfa, issuer=sessions.issuer
        )
        self._first = FirstFactor(parts, clock)

    @property
    def sso_protocols(self) -> tuple[str, ...]:
        return tuple(self._p.sso)

    # -- users -------------------------------------------------------------------------------------

    async def create_user(
        self,
        username: str,
        password: str,
        *,
        roles: Iterable[str] = (),
        attributes: Mapping[str, Any] | None = None,
        phone: str | None = None,
        tenants: Iterable[str] = (),
    ) -> User:
        """Create a local user who may log in on the routes of `tenants` (none: the platform's)."""
        check_username(username)
        check_password(password)
        members_of = check_tenant_ids(tenants)
        if await self._p.users.find(username) is not None:
            raise ConfigurationError(f"A user named {username!r} already exists.")
        encoded = await self._first.hash(password)
        user = User(
            user_id=f"local:{secrets.token_hex(8)}",
            username=username,
            source="local",
            roles=frozenset(roles),
            created_at=self._clock.now(),
            attributes=dict(attributes or {}),
            password_hash=encoded,
            phone=phone,
            tenants=members_of,
        )
        await self._p.users.add(user)
        return user

    async def set_password(self, username: str, password: str) -> None:
        check_password(password)
        user = await self._require_user(username)
        if user.source != "local":
            raise ConfigurationError(
                f"{username!r} signs in through {user.source}; it has no local password."
            )
        encoded = await self._first.hash(password)
        await self._p.users.update(replace(user, password_hash=encoded))
        await self.revoke_sessions(username)

    async def update_user(
        self,
        username: str,
        *,
        roles: Iterable[str] | None = None,
        attributes: Mapping[str, Any] | None = None,
        phone: str | None = None,
        disabled: bool | None = None,
        tenants: Iterable[str] | None = None,
    ) -> User:
        """Change what is given; new roles or tenants, or disabling, end the user's sessions (and
        logins in flight), since each session holds what the user was at login."""
        members_of = None if tenants is None else check_tenant_ids(tenants)
        user = await self._require_user(username)
        changed = replace(
            user,
            roles=user.roles if roles is None else frozenset(roles),
            attributes=user.attributes if attributes is None else dict(attributes),
            phone=user.phone if phone is None else phone,
            disabled=user.disabled if disabled is None else disabled,
            tenants=user.tenants if members_of is None else members_of,
        )
        await self._p.users.update(changed)
        if disabled or roles is not None or members_of is not None:
            await self.revoke_sessions(username)
        return changed

    async def delete_user(self, username: str) -> bool:
        user = await self._p.users.find(username)
        if user is None:
            return False
        await self._sessions.revoke_user(user.user_id)
        for factor in await self._p.factors.for_user(user.user_id):
            await self._p.factors.remove(factor.factor_id)
        return await self._p.users.delete(user.user_id)

    async def list_users(self) -> list[User]:
        return list(await self._p.users.list())

    async def get_user(self, username: str) -> User | None:
        return await self._p.users.find(username)

    async def revoke_sessions(self, username: str) -> int:
        """End the user's sessions and any login of theirs in flight (a pending challenge included)."""
        user = await self._require_user(username)
        return await self._standing.revoke(user.user_id)

    async def _require_user(self, username: str) -> User:
        user = await self._p.users.find(username)
        if user is None:
            raise ConfigurationError(f"No user named {username!r}.")
        return user

    # -- first factor ------------------------------------------------------------------------------

    async def login(
        self, username: str, password: str, channel: Channel, address: str, *, tenant_id: str | None = None
    ) -> Grant:
        """Password login (local users, then the directory) to `tenant_id`'s route (None: the
        platform's). Raises `MfaRequiredError` with a challenge id when a second factor is due, and
        `LoginRefusedError` (a wrong password to the caller) when the account is no member of it."""
        if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
            raise InvalidInputError("Give a username and a password.")
        throttle = self._p.throttle
        attempt = await throttle.attempt(username, address)
        # Other spellings (blanks, full-width letters) never reach the directory, which may
        # take them for an account that is throttled under its own name.
        user = await self._first.verify(username, password) if _USERNAME.fullmatch(username) else None
        if user is None:
            await throttle.failed(attempt)
            raise AuthenticationError(_WRONG_LOGIN)
        # Checked after the password, and counted like a wrong one: neither the answer, its
        # timing nor the lockout tells anyone which tenants an account belongs to.
        try:
            _check_route(user, tenant_id)
        except LoginRefusedError:
            await throttle.failed(attempt)
            raise
        method = "ldap" if user.source == "ldap" else "password"
        grant = await self._after_first_factor(user, method, channel, (username, address), tenant_id)
        # Only a finished login (second factor included) clears failures and trusts the address.
        await throttle.succeeded(username, address)
        return grant

    async def link_external(self, identity: ExternalIdentity) -> User:
        """The user record for a directory or SSO identity, created or refreshed from it.

        Roles and attributes follow the provider at every login. A local account of the same name
        is never taken over: that login is refused.
        """
        return await self._first.link(identity)

    async def begin_sso(
        self, protocol: str, channel: Channel, return_to: str, *, tenant_id: str | None = None
    ) -> str:
        """The identity provider URL to send the browser to; `return_to` is where it comes back.

        The login is to `tenant_id` (None: the platform), the tenant whose route it began on: it is
        kept in the pending state, since providers call back at one fixed address for every tenant.
        """
        state = json.dumps({"channel": channel.value, "to": return_to, "tenant": tenant_id})
        return (await self._sso(protocol).begin(return_to=state)).url

    async def complete_sso(
        self,
        protocol: str,
        params: Mapping[str, str],
        address: str = "",
        *,
        tenant_id: str | None = None,
        admit: Callable[[str], Awaitable[None]] | None = None,
    ) -> tuple[Grant, str]:
        """Finish an SSO login to the tenant it began in; returns the grant and where the browser
        asked to go afterwards.

        `tenant_id` is the tenant whose route the callback came by (None: the platform's); it must
        be the platform's or the one the login began in. `admit(tenant)` checks the tenant it began
        in may still be logged in to (exists, not suspended) and raises otherwise. `address` is the
        client's, for throttling wrong second factors (empty when unknown: those are then counted
        under one shared address). Raises `MfaRequiredError` (carrying `return_to`) when a second
        factor is due, and `LoginRefusedError` when the callback came by another tenant's route or
        the account is no member of the tenant.
        """
        identity, state = await self._sso(protocol).complete(params)
        channel, return_to, begun_in = _read_sso_state(state)
        # Checked before the account is linked: a login elsewhere creates and refreshes nothing.
        if tenant_id is not None and tenant_id != begun_in:
            raise LoginRefusedError(SSO_UNKNOWN, audit_reason=_sso_elsewhere(begun_in))
        if begun_in is not None and admit is not None:
            await admit(begun_in)
        user = await self._first.link(identity)
        if user.disabled:
            raise AuthenticationError("This account is disabled.")
        _check_route(user, begun_in)
        try:
            grant = await self._after_first_factor(
                user, protocol, channel, (user.username, address), begun_in
            )
        except (MfaRequiredError, MfaEnrollmentRequiredError) as due:
            due.detail["return_to"] = return_to
            raise
        return grant, return_to

    def sso_metadata(self, protocol: str) -> str | None:
        return self._sso(protocol).metadata()

    async def keep_sso_outcome(self, code: str, outcome: str, ttl_s: float) -> None:
        """Hold a finished sign-on for the one-time code the browser carries back."""
        await self._p.ephemeral.put(f"sso:{code}", outcome, ttl_s)

    async def take_sso_outcome(self, code: str) -> str | None:
        if not 16 <= len(code) <= 64:
            return None
        return await self._p.ephemeral.take(f"sso:{code}")

    def _sso(self, protocol: str) -> SsoProtocol:
        adapter = self._p.sso.get(protocol)
        if adapter is None:
            raise InvalidInputError(f"Single sign-on over {protocol[:16]!r} is not configured.")
        return adapter

    async def _after_first_factor(
        self,
        user: User,
        method: str,
        channel: Channel,
        throttled_as: tuple[str, str],
        tenant_id: str | None,
    ) -> Grant:
        """A session in `tenant_id`, or a second-factor challenge, for `user` as the first factor
        found it.

        `throttled_as` is the (account, address) the login's failures count under.
        """
        if self.mfa.due(user.roles, channel):
            account, address = throttled_as
            challenge = {
                "purpose": "login",
                "user_id": user.user_id,
                "method": method,
                "channel": channel.value,
                "account": account,
                "address": address,
                "tenant_id": tenant_id,
            }
            await self._factors.challenge(user, challenge)
        fingerprint = await self._standing.fingerprint(user)
        grant = await self._standing.open_session(
            user, fingerprint, method, channel, mfa=False, tenant_id=tenant_id
        )
        if grant is None:  # disabled, or its password changed, while the login was in flight
            raise AuthenticationError(_WRONG_LOGIN)
        return grant

    # -- second factor (see factors.py) ----------------------------------------------------------

    async def challenge_owner(self, challenge_id: object) -> str | None:
        """The user a pending challenge belongs to (for the audit of its steps), without using it."""
        return await self._factors.challenge_owner(challenge_id)

    async def send_sms_code(self, challenge_id: str) -> str:
        """Text a one-time code to the user's enrolled phone; returns the masked number."""
        return await self._factors.send_sms_code(challenge_id)

    async def hardware_key_options(self, challenge_id: str) -> dict[str, Any]:
        """WebAuthn assertion options for the user's registered keys."""
        return await self._factors.hardware_key_options(challenge_id)

    async def answer(
        self, challenge_id: str, method: str, response: Any, *, tenant_id: str | None = None
    ) -> Grant:
        """Answer a second-factor challenge. On success the login (or step-up) completes; a login's
        challenge is answered on the route (`tenant_id`) it began on, or is unknown."""
        return await self._factors.answer(challenge_id, method, response, tenant_id=tenant_id)

    async def enroll(self, challenge_id: str, method: str, *, phone: str | None = None) -> Enrollment:
        """Start enrolling a factor during a login whose MFA is due but has none."""
        return await self._factors.enroll(challenge_id, method, phone=phone)

    async def start_enrollment(self, user: User, method: str, *, phone: str | None = None) -> Enrollment:
        return await self._factors.start_enrollment(user, method, phone=phone)

    async def activate(
        self, challenge_id: str, response: Any, *, tenant_id: str | None = None
    ) -> tuple[Grant, list[str]]:
        """Prove the enrolled factor works; activates it, hands out recovery codes, finishes the
        login (on the route, `tenant_id`, it began on)."""
        return await self._factors.activate(challenge_id, response, tenant_id=tenant_id)

    async def new_recovery_codes(self, user: User) -> list[str]:
        """Replace the user's recovery codes; the plaintext is returned once, only hashes are kept."""
        return await self._factors.new_recovery_codes(user)

    # -- sessions and tokens (see sessions.py) ---------------------------------------------------

    async def session_of(self, session_token: object) -> Session:
        """The live session a session token opens; `AuthenticationError` otherwise."""
        return await self._sessions.session_of(session_token)

    async def token(self, session_token: str, channel: Channel) -> AccessToken:
        """A short-lived token for `channel` from a session (cross-channel sign-on)."""
        session = await self.session_of(session_token)
        self._sessions.check_cross_channel(session, channel)
        if self.mfa.due(session.roles, channel) and channel not in session.mfa_channels:
            user = await self._p.users.get(session.user_id)
            if user is None:
                raise AuthenticationError(SESSION_ENDED)
            challenge = {
                "purpose": "token",
                "user_id": user.user_id,
                "method": session.method,
                "channel": channel.value,
                "session_id": session.session_id,
                # No client address here: wrong codes are counted against the session instead.
                "account": user.username,
                "address": f"session:{session.session_id}",
            }
            await self._factors.challenge(user, challenge)
        return self._sessions.mint(session, channel)

    async def reauthenticate(
        self, session_token: str, password: str | None, channel: Channel, address: str
    ) -> Grant:
        """Step-up: prove again who you are (password, then a second factor when enrolled)."""
        session = await self.session_of(session_token)
        self._sessions.check_cross_channel(session, channel)
        user = await self._p.users.get(session.user_id)
        if user is None or user.disabled:
            raise AuthenticationError(SESSION_ENDED)
        if user.source in ("local", "ldap"):
            if not isinstance(password, str) or not password:
                raise InvalidInputError("Give the password to re-authenticate.")
            attempt = await self._p.throttle.attempt(user.username, address)
            if await self._first.verify(user.username, password) is None:
                await self._p.throttle.failed(attempt)
                raise AuthenticationError(_WRONG_LOGIN)
        else:
            raise AuthenticationError(f"Re-authenticate by signing in again through {user.source}.")
        if self.mfa.enabled and self.mfa.bypass_roles.isdisjoint(user.roles):
            challenge = {
                "purpose": "reauth",
                "user_id": user.user_id,
                "method": session.method,
                "channel": channel.value,
                "session_id": session.session_id,
                "account": user.username,
                "address": address,
            }
            await self._factors.challenge(user, challenge)
        await self._p.throttle.succeeded(user.username, address)
        return await self._sessions.reauthenticated(
            session.session_id,
            channel,
            auth_time=self._clock.now(),
            mfa_time=session.mfa_time,
            mfa_channels=session.mfa_channels,
        )

    async def logout(self, credential: str, channel: Channel) -> str:
        """End the session behind a session token or a channel token; every derived token dies."""
        return await self._sessions.logout(credential, channel)

    async def authenticate(self, token: str, channel: Channel) -> Principal:
        """The principal a channel token stands for, checked against its live session."""
        return await self._sessions.authenticate(token, channel)

    def forget_sessions(self) -> None:
        self._sessions.forget()
