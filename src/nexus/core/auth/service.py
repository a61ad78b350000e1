"""Identity decisions, made once for every channel: logins, second factors, sessions, channel tokens.

Channels call `IdentityService` for the login conversation and the pipeline calls it to turn a
bearer token into a principal. Protocol work (hashing, LDAP, OIDC, SAML, TOTP, WebAuthn, JWT)
happens behind the ports of `nexus.core.auth.ports`; the rules live here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

from nexus.core.auth.model import ExternalIdentity, Factor, FactorKind, Session, User, mask_phone
from nexus.core.auth.policy import ALL_CHANNELS, MfaPolicy, SessionPolicy
from nexus.core.auth.ports import (
    Directory,
    EphemeralStore,
    FactorStore,
    HardwareKeyVerifier,
    OtpVerifier,
    PasswordHasher,
    SessionStore,
    SmsSender,
    SsoProtocol,
    TokenCodec,
    UserStore,
)
from nexus.core.auth.recovery import new_recovery_codes, normalize_recovery_code
from nexus.core.auth.throttle import LoginThrottle
from nexus.core.ports import Clock
from nexus.core.types import Channel, Principal
from nexus.errors import (
    AuthenticationError,
    ConfigurationError,
    ForbiddenError,
    InvalidInputError,
    MfaEnrollmentRequiredError,
    MfaRequiredError,
)

SESSION_PREFIX = "nxs"
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
_MIN_PASSWORD = 8
_MAX_PASSWORD = 1024
_WRONG_LOGIN = "The username or password is wrong."
_SESSION_ENDED = "The session has ended or is unknown; log in again."
_CHALLENGE_GONE = "The login challenge is unknown, used up or expired; log in again."
RECOVERY_CODES = 10
T = TypeVar("T")


def hash_token_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


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


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str = field(repr=False)
    channel: Channel
    expires_at: datetime
    lifetime_s: int
    user_id: str


@dataclass(frozen=True, slots=True)
class Grant:
    """A completed login: the session (its token shown once) and a token for the login channel."""

    session: Session
    session_token: str = field(repr=False)
    access: AccessToken


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A factor being enrolled: what the user's device needs (URI, WebAuthn options) and its id."""

    factor_id: str
    kind: FactorKind
    details: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class IdentityParts:
    """The stores and protocol adapters the service works with."""

    users: UserStore
    factors: FactorStore
    sessions: SessionStore
    ephemeral: EphemeralStore
    hasher: PasswordHasher
    tokens: TokenCodec
    throttle: LoginThrottle
    directory: Directory | None = None
    sso: Mapping[str, SsoProtocol] = field(default_factory=dict)
    otp: OtpVerifier | None = None
    hardware: HardwareKeyVerifier | None = None
    sms: SmsSender | None = None


class IdentityService:
    """Who may log in, what a login yields, and what a token stands for."""

    def __init__(
        self, parts: IdentityParts, clock: Clock, *, mfa: MfaPolicy, sessions: SessionPolicy
    ) -> None:
        self._p = parts
        self._clock = clock
        self.mfa = mfa
        self.policy = sessions
        self._cache: dict[str, tuple[Session, float]] = {}

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
    ) -> User:
        check_username(username)
        check_password(password)
        if await self._p.users.find(username) is not None:
            raise ConfigurationError(f"A user named {username!r} already exists.")
        encoded = await asyncio.to_thread(self._p.hasher.hash, password)
        user = User(
            user_id=f"local:{secrets.token_hex(8)}",
            username=username,
            source="local",
            roles=frozenset(roles),
            created_at=self._clock.now(),
            attributes=dict(attributes or {}),
            password_hash=encoded,
            phone=phone,
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
        encoded = await asyncio.to_thread(self._p.hasher.hash, password)
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
    ) -> User:
        user = await self._require_user(username)
        changed = replace(
            user,
            roles=user.roles if roles is None else frozenset(roles),
            attributes=user.attributes if attributes is None else dict(attributes),
            phone=user.phone if phone is None else phone,
            disabled=user.disabled if disabled is None else disabled,
        )
        await self._p.users.update(changed)
        if disabled or roles is not None:
            await self.revoke_sessions(username)
        return changed

    async def delete_user(self, username: str) -> bool:
        user = await self._p.users.find(username)
        if user is None:
            return False
        await self._p.sessions.revoke_user(user.user_id, self._clock.now())
        for factor in await self._p.factors.for_user(user.user_id):
            await self._p.factors.remove(factor.factor_id)
        self._cache.clear()
        return await self._p.users.delete(user.user_id)

    async def list_users(self) -> list[User]:
        return list(await self._p.users.list())

    async def get_user(self, username: str) -> User | None:
        return await self._p.users.find(username)

    async def revoke_sessions(self, username: str) -> int:
        user = await self._require_user(username)
        count = await self._p.sessions.revoke_user(user.user_id, self._clock.now())
        self._cache.clear()
        return count

    async def _require_user(self, username: str) -> User:
        user = await self._p.users.find(username)
        if user is None:
            raise ConfigurationError(f"No user named {username!r}.")
        return user

    # -- first factor ------------------------------------------------------------------------------

    async def login(self, username: str, password: str, channel: Channel, address: str) -> Grant:
        """Password login (local users, then the directory). Raises `MfaRequiredError` with a
        challenge id when a second factor is due."""
        if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
            raise InvalidInputError("Give a username and a password.")
        throttle = self._p.throttle
        await throttle.check(username, address)
        user = await self._first_factor(username, password)
        if user is None:
            await throttle.failed(username, address)
            raise AuthenticationError(_WRONG_LOGIN)
        method = "ldap" if user.source == "ldap" else "password"
        grant = await self._after_first_factor(user, method, channel, attempt=(username, address))
        # Only a finished login (second factor included) clears failures and trusts the address.
        await throttle.succeeded(username, address)
        return grant

    async def _first_factor(self, username: str, password: str) -> User | None:
        user = await self._p.users.find(username) if _USERNAME.fullmatch(username) else None
        if user is not None and user.source == "local":
            encoded = user.password_hash or ""
            ok = await asyncio.to_thread(self._p.hasher.verify, encoded, password)
            if not ok or user.disabled:
                return None
            if await asyncio.to_thread(self._p.hasher.needs_rehash, encoded):
                rehashed = await asyncio.to_thread(self._p.hasher.hash, password)
                await self._p.users.update(replace(user, password_hash=rehashed))
            return user
        directory = self._p.directory
        if directory is not None and (user is None or user.source == "ldap"):
            identity = await directory.authenticate(username, password)
            if identity is None:
                return None
            linked = await self.link_external(identity)
            return None if linked.disabled else linked
        # No account to check against: spend the time a real check would, so timing says nothing.
        await asyncio.to_thread(self._p.hasher.verify_against_nothing, password)
        return None

    async def link_external(self, identity: ExternalIdentity) -> User:
        """The user record for a directory or SSO identity, created or refreshed from it.

        Roles and attributes follow the provider at every login. A local account of the same name
        is never taken over: that login is refused.
        """
        user_id = f"{identity.source}:{identity.subject}"
        existing = await self._p.users.get(user_id)
        if existing is None:
            clash = await self._p.users.find(identity.username)
            if clash is not None:
                raise AuthenticationError(
                    "This account name is already taken by another sign-in method; ask an administrator."
                )
            user = User(
                user_id=user_id,
                username=identity.username,
                source=identity.source,
                roles=identity.roles,
                created_at=self._clock.now(),
                attributes=dict(identity.attributes),
            )
            await self._p.users.add(user)
            return user
        refreshed = replace(existing, roles=identity.roles, attributes=dict(identity.attributes))
        if refreshed != existing:
            await self._p.users.update(refreshed)
        return refreshed

    async def begin_sso(self, protocol: str, channel: Channel, return_to: str) -> str:
        """The identity provider URL to send the browser to; `return_to` is where it comes back."""
        state = json.dumps({"channel": channel.value, "to": return_to})
        return (await self._sso(protocol).begin(return_to=state)).url

    async def complete_sso(self, protocol: str, params: Mapping[str, str]) -> tuple[Grant, str]:
        """Finish an SSO login; returns the grant and where the browser asked to go afterwards.

        Raises `MfaRequiredError` (carrying `return_to`) when a second factor is due.
        """
        identity, state = await self._sso(protocol).complete(params)
        try:
            begun = json.loads(state)
            channel, return_to = Channel(begun["channel"]), str(begun["to"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthenticationError("The sign-on state is not one this server issued.") from exc
        user = await self.link_external(identity)
        if user.disabled:
            raise AuthenticationError("This account is disabled.")
        try:
            return await self._after_first_factor(user, protocol, channel), return_to
        except (MfaRequiredError, MfaEnrollmentRequiredError) as due:
            due.detail["return_to"] = return_to
            raise

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
        self, user: User, method: str, channel: Channel, *, attempt: tuple[str, str] | None = None
    ) -> Grant:
        """`attempt` is the (account, address) the login is throttled under, when it has one."""
        if not self.mfa.due(user.roles, channel):
            return await self._open_session(user, method, channel, mfa=False)
        challenge = {"purpose": "login", "user_id": user.user_id, "method": method, "channel": channel.value}
        if attempt is not None:
            challenge["account"], challenge["address"] = attempt
        await self._challenge(user, challenge)

    # -- second factor -----------------------------------------------------------------------------

    async def _challenge(self, user: User, challenge: dict[str, Any]) -> NoReturn:
        """Store a pending second-factor step and raise the error that asks for it."""
        factors = [f for f in await self._usable_factors(user.user_id) if f.kind is not FactorKind.RECOVERY]
        challenge_id = secrets.token_urlsafe(24)
        challenge["attempts"] = 0
        challenge["until"] = self._clock.now().timestamp() + self.mfa.challenge_ttl_s
        await self._put_challenge(challenge_id, challenge)
        if not factors:
            raise MfaEnrollmentRequiredError(
                "A second factor is required and none is enrolled: enroll one with this challenge.",
                challenge_id=challenge_id,
                methods=sorted(kind.value for kind in self.mfa.methods if kind is not FactorKind.RECOVERY),
            )
        methods = sorted({f.kind.value for f in factors} | {FactorKind.RECOVERY.value})
        raise MfaRequiredError(
            "A second factor is required: answer the challenge with one of the methods.",
            challenge_id=challenge_id,
            methods=methods,
        )

    async def _usable_factors(self, user_id: str) -> list[Factor]:
        return [
            f
            for f in await self._p.factors.for_user(user_id)
            if f.active and f.used_at is None and self.mfa.accepts(f.kind)
        ]

    async def _put_challenge(self, challenge_id: str, challenge: Mapping[str, Any]) -> None:
        # Put back with what is left of its life: answering or asking for codes never extends it.
        left = float(challenge["until"]) - self._clock.now().timestamp()
        if left > 0:
            await self._p.ephemeral.put(f"chal:{challenge_id}", json.dumps(challenge), left)

    async def challenge_owner(self, challenge_id: object) -> str | None:
        """The user a pending challenge belongs to (for the audit of its steps), without using it."""
        if not isinstance(challenge_id, str) or not 16 <= len(challenge_id) <= 64:
            return None
        raw = await self._p.ephemeral.get(f"chal:{challenge_id}")
        if raw is None:
            return None
        owner = json.loads(raw).get("user_id")
        return owner if isinstance(owner, str) else None

    async def _take_challenge(self, challenge_id: object) -> tuple[str, dict[str, Any]]:
        if not isinstance(challenge_id, str) or not 16 <= len(challenge_id) <= 64:
            raise AuthenticationError(_CHALLENGE_GONE)
        raw = await self._p.ephemeral.take(f"chal:{challenge_id}")
        if raw is None:
            raise AuthenticationError(_CHALLENGE_GONE)
        challenge: dict[str, Any] = json.loads(raw)
        if self._clock.now().timestamp() >= float(challenge.get("until", 0)):
            raise AuthenticationError(_CHALLENGE_GONE)
        return challenge_id, challenge

    async def send_sms_code(self, challenge_id: str) -> str:
        """Text a one-time code to the user's enrolled phone; returns the masked number."""
        cid, challenge = await self._take_challenge(challenge_id)
        try:
            sender = self._p.sms
            user = await self._p.users.get(challenge["user_id"])
            factor = None
            if user is not None:
                factor = next(
                    (f for f in await self._usable_factors(user.user_id) if f.kind is FactorKind.SMS), None
                )
            if sender is None or factor is None or not self.mfa.accepts(FactorKind.SMS):
                raise InvalidInputError("No text-message factor is available for this challenge.")
            # Each text costs money and lands on a real phone: a few per challenge at most.
            if challenge.get("texts", 0) >= self.mfa.max_attempts:
                raise AuthenticationError(
                    "Too many codes sent for this sign-in; use the last one or log in again.",
                    challenge_id=cid,
                )
            challenge["texts"] = challenge.get("texts", 0) + 1
            code = self._new_sms_code(challenge)
            await sender.send(factor.secret, f"Your Nexus sign-in code is {code}. {self._sms_expiry()}")
            return mask_phone(factor.secret)
        finally:
            await self._put_challenge(cid, challenge)

    def _new_sms_code(self, challenge: dict[str, Any]) -> str:
        """A fresh six-digit code for `challenge` (replacing any earlier one); only its hash is kept."""
        code = f"{secrets.randbelow(1_000_000):06d}"
        until = self._clock.now().timestamp() + self.mfa.sms_code_ttl_s
        challenge["sms"] = {"hash": hash_token_secret(code), "until": until}
        return code

    def _sms_expiry(self) -> str:
        seconds = int(self.mfa.sms_code_ttl_s)
        return (
            f"It expires in {seconds // 60} minutes."
            if seconds >= 120
            else f"It expires in {seconds} seconds."
        )

    async def hardware_key_options(self, challenge_id: str) -> dict[str, Any]:
        """WebAuthn assertion options for the user's registered keys."""
        cid, challenge = await self._take_challenge(challenge_id)
        try:
            verifier = self._p.hardware
            keys = [
                f
                for f in await self._usable_factors(challenge["user_id"])
                if f.kind is FactorKind.HARDWARE_KEY and f.credential_id
            ]
            if verifier is None or not keys:
                raise InvalidInputError("No hardware key is registered for this challenge.")
            options, nonce = verifier.authentication_options([k.credential_id or "" for k in keys])
            challenge["webauthn"] = nonce
            return options
        finally:
            await self._put_challenge(cid, challenge)

    async def answer(self, challenge_id: str, method: str, response: Any) -> Grant:
        """Answer a second-factor challenge. On success the login (or step-up) completes."""
        cid, challenge = await self._take_challenge(challenge_id)
        user = await self._p.users.get(challenge["user_id"])
        if user is None or user.disabled:
            raise AuthenticationError(_CHALLENGE_GONE)
        await self._check_throttle(challenge)
        if challenge.get("enroll"):
            await self._put_challenge(cid, challenge)
            raise InvalidInputError("Activate the factor being enrolled first.")
        try:
            kind = FactorKind(method)
        except ValueError:
            kind = None
        if kind is None or not self.mfa.accepts(kind):
            await self._put_challenge(cid, challenge)
            raise InvalidInputError(f"The method must be one of: {', '.join(sorted(self._methods()))}.")
        if not await self._verify_factor(user, kind, response, challenge):
            await self._count_failure(challenge)
            challenge["attempts"] = challenge.get("attempts", 0) + 1
            if challenge["attempts"] < self.mfa.max_attempts:
                await self._put_challenge(cid, challenge)
                raise AuthenticationError("The code is wrong, expired or already used.", challenge_id=cid)
            raise AuthenticationError("Too many wrong codes; log in again.")
        return await self._complete(user, challenge)

    async def _check_throttle(self, challenge: Mapping[str, Any]) -> None:
        if "address" in challenge:
            await self._p.throttle.check(challenge["account"], challenge["address"])

    async def _count_failure(self, challenge: Mapping[str, Any]) -> None:
        """A wrong second factor counts as a failed login, so a known password gives few guesses."""
        if "address" in challenge:
            await self._p.throttle.failed(challenge["account"], challenge["address"])

    def _methods(self) -> set[str]:
        return {kind.value for kind in self.mfa.methods} | {FactorKind.RECOVERY.value}

    async def _verify_factor(
        self, user: User, kind: FactorKind, response: Any, challenge: dict[str, Any]
    ) -> bool:
        factors = [f for f in await self._usable_factors(user.user_id) if f.kind is kind]
        if kind is FactorKind.HARDWARE_KEY:
            return await self._verify_key(factors, response, challenge)
        if not isinstance(response, str):
            return False
        if kind is FactorKind.TOTP:
            return await self._verify_totp(factors, response)
        if kind is FactorKind.SMS:
            return self._verify_sms(challenge, response)
        return await self._verify_recovery(factors, response)

    async def _verify_totp(self, factors: list[Factor], code: str) -> bool:
        otp = self._p.otp
        now = self._clock.now()
        for factor in factors if otp is not None else []:
            step = otp.match(factor.secret, code.strip(), now) if otp is not None else None
            if step is not None:
                # The step only moves forward: a code used once (or an older one) never works again.
                return await self._p.factors.advance_step(factor.factor_id, step)
        return False

    def _verify_sms(self, challenge: dict[str, Any], code: str) -> bool:
        """The code texted for this challenge, unexpired; it is spent by this one try either way."""
        sent = challenge.pop("sms", None)
        if not sent or self._clock.now().timestamp() > float(sent["until"]):
            return False
        return hmac.compare_digest(sent["hash"], hash_token_secret(code.strip()))

    async def _verify_recovery(self, factors: list[Factor], text: str) -> bool:
        normal = normalize_recovery_code(text)
        if normal is None:
            return False
        wanted = hash_token_secret(normal)
        for factor in factors:
            if hmac.compare_digest(factor.secret, wanted):
                return await self._p.factors.use_once(factor.factor_id, self._clock.now())
        return False

    async def _verify_key(self, factors: list[Factor], response: Any, challenge: dict[str, Any]) -> bool:
        nonce = challenge.pop("webauthn", None)
        hardware = self._p.hardware
        if nonce is None or hardware is None or not isinstance(response, Mapping):
            return False
        factor = next((f for f in factors if f.credential_id == response.get("id")), None)
        if factor is None:
            return False
        try:
            count = hardware.verify_authentication(
                response, nonce, public_key=factor.secret, sign_count=factor.sign_count
            )
        except AuthenticationError:
            return False
        return await self._p.factors.advance_sign_count(factor.factor_id, count)

    async def _complete(self, user: User, challenge: Mapping[str, Any]) -> Grant:
        channel = Channel(challenge["channel"])
        purpose = challenge["purpose"]
        if "address" in challenge:
            await self._p.throttle.succeeded(challenge["account"], challenge["address"])
        if purpose == "login":
            return await self._open_session(user, challenge["method"], channel, mfa=True)
        session = await self._live_session(challenge["session_id"])
        now = self._clock.now()
        channels = ALL_CHANNELS if self.mfa.session_binding else session.mfa_channels | {channel}
        if purpose == "reauth":
            await self._p.sessions.reauthenticated(
                session.session_id, auth_time=now, mfa_time=now, mfa_channels=channels
            )
        else:  # "token": a channel that needed its own second factor
            await self._p.sessions.reauthenticated(
                session.session_id, auth_time=session.auth_time, mfa_time=now, mfa_channels=channels
            )
        self._cache.pop(session.session_id, None)
        session = await self._live_session(session.session_id)
        return Grant(session=session, session_token="", access=self._mint(session, channel))

    # -- enrollment ------------------------------------------------------------------------------

    async def enroll(self, challenge_id: str, method: str, *, phone: str | None = None) -> Enrollment:
        """Start enrolling a factor during a login whose MFA is due but has none."""
        cid, challenge = await self._take_challenge(challenge_id)
        try:
            user = await self._p.users.get(challenge["user_id"])
            if user is None:
                raise AuthenticationError(_CHALLENGE_GONE)
            # Enrolling during a login is trust on first use; with a factor in place it would let a
            # password alone replace it.
            if any(f.kind is not FactorKind.RECOVERY for f in await self._usable_factors(user.user_id)):
                raise InvalidInputError(
                    "This account already has a second factor; answer the challenge with it."
                )
            enrollment = await self.start_enrollment(user, method, phone=phone)
            challenge["enroll"] = enrollment.factor_id
            if enrollment.kind is FactorKind.HARDWARE_KEY:
                challenge["webauthn"] = enrollment.details["challenge"]
            if enrollment.kind is FactorKind.SMS:
                code = self._new_sms_code(challenge)
                if self._p.sms is not None and phone:
                    await self._p.sms.send(
                        phone, f"Your Nexus enrollment code is {code}. {self._sms_expiry()}"
                    )
            return enrollment
        finally:
            await self._put_challenge(cid, challenge)

    async def start_enrollment(self, user: User, method: str, *, phone: str | None = None) -> Enrollment:
        try:
            kind = FactorKind(method)
        except ValueError:
            kind = None
        if kind is None or kind is FactorKind.RECOVERY or kind not in self.mfa.methods:
            raise InvalidInputError(
                f"The method must be one of: {', '.join(sorted(m.value for m in self.mfa.methods))}."
            )
        factor_id = secrets.token_hex(8)
        now = self._clock.now()
        if kind is FactorKind.TOTP:
            otp = self._require(self._p.otp, "TOTP")
            secret = otp.new_secret()
            await self._p.factors.add(
                Factor(factor_id, user.user_id, kind, secret, now, label="authenticator app")
            )
            uri = otp.provisioning_uri(secret, user.username, self.policy.issuer)
            return Enrollment(factor_id, kind, {"secret": secret, "provisioning_uri": uri})
        if kind is FactorKind.SMS:
            if not phone or not re.fullmatch(r"\+?[0-9]{6,15}", phone):
                raise InvalidInputError("Give the phone number in international form, like +15551234567.")
            self._require(self._p.sms, "text messages")
            await self._p.factors.add(
                Factor(factor_id, user.user_id, kind, phone, now, label=mask_phone(phone))
            )
            return Enrollment(factor_id, kind, {"phone": mask_phone(phone)})
        hardware = self._require(self._p.hardware, "hardware keys")
        existing = [
            f.credential_id or "" for f in await self._p.factors.for_user(user.user_id) if f.credential_id
        ]
        options, nonce = hardware.registration_options(user.user_id, user.username, existing)
        return Enrollment(factor_id, kind, {"options": options, "challenge": nonce})

    async def activate(self, challenge_id: str, response: Any) -> tuple[Grant, list[str]]:
        """Prove the enrolled factor works; activates it, hands out recovery codes, finishes the login."""
        cid, challenge = await self._take_challenge(challenge_id)
        factor_id = challenge.get("enroll")
        user = await self._p.users.get(challenge["user_id"])
        if user is None or user.disabled:
            raise AuthenticationError(_CHALLENGE_GONE)
        if not factor_id:
            await self._put_challenge(cid, challenge)
            raise InvalidInputError("Enroll a second factor with this challenge before activating one.")
        ok = await self._activate_factor(user, factor_id, response, challenge)
        if not ok:
            challenge["attempts"] = challenge.get("attempts", 0) + 1
            if challenge["attempts"] < self.mfa.max_attempts:
                await self._put_challenge(cid, challenge)
                raise AuthenticationError("The code is wrong; try the current one.", challenge_id=cid)
            raise AuthenticationError("Too many wrong codes; log in again.")
        codes = await self.new_recovery_codes(user)
        challenge.pop("enroll", None)
        return await self._complete(user, challenge), codes

    async def _activate_factor(
        self, user: User, factor_id: str, response: Any, challenge: dict[str, Any]
    ) -> bool:
        pending = {f.factor_id: f for f in await self._p.factors.for_user(user.user_id)}
        factor = pending.get(factor_id)
        now = self._clock.now()
        if factor is not None and factor.kind is FactorKind.TOTP and self._p.otp is not None:
            step = (
                self._p.otp.match(factor.secret, str(response).strip(), now)
                if isinstance(response, str)
                else None
            )
            if step is None or not await self._p.factors.advance_step(factor_id, step):
                return False
            return await self._p.factors.activate(factor_id)
        if factor is not None and factor.kind is FactorKind.SMS:
            if not isinstance(response, str) or not self._verify_sms(challenge, response):
                return False
            return await self._p.factors.activate(factor_id)
        nonce = challenge.pop("webauthn", None)
        if factor is None and nonce and self._p.hardware is not None and response is not None:
            try:
                key = self._p.hardware.verify_registration(response, nonce)
            except AuthenticationError:
                return False
            await self._p.factors.add(
                Factor(
                    factor_id,
                    user.user_id,
                    FactorKind.HARDWARE_KEY,
                    key.public_key,
                    now,
                    active=True,
                    label="hardware key",
                    credential_id=key.credential_id,
                    sign_count=key.sign_count,
                )
            )
            return True
        return False

    async def new_recovery_codes(self, user: User) -> list[str]:
        """Replace the user's recovery codes; the plaintext is returned once, only hashes are kept."""
        for factor in await self._p.factors.for_user(user.user_id):
            if factor.kind is FactorKind.RECOVERY:
                await self._p.factors.remove(factor.factor_id)
        codes = new_recovery_codes(RECOVERY_CODES)
        now = self._clock.now()
        for code in codes:
            factor = Factor(
                secrets.token_hex(8),
                user.user_id,
                FactorKind.RECOVERY,
                hash_token_secret(code),
                now,
                active=True,
                label="recovery code",
            )
            await self._p.factors.add(factor)
        return codes

    def _require(self, adapter: T | None, what: str) -> T:
        if adapter is None:
            raise InvalidInputError(f"Second factors by {what} are not configured.")
        return adapter

    # -- sessions and tokens ---------------------------------------------------------------------

    async def _open_session(self, user: User, method: str, channel: Channel, *, mfa: bool) -> Grant:
        now = self._clock.now()
        secret = secrets.token_urlsafe(32)
        channels = (
            (ALL_CHANNELS if self.mfa.session_binding else frozenset({channel})) if mfa else frozenset()
        )
        session = Session(
            session_id=secrets.token_urlsafe(16).replace("_", "A").replace("-", "B"),
            user_id=user.user_id,
            username=user.username,
            method=method,
            roles=user.roles,
            created_at=now,
            expires_at=now + timedelta(seconds=self.policy.session_duration_s),
            auth_time=now,
            origin_channel=channel,
            secret_hash=hash_token_secret(secret),
            attributes=user.attributes,
            mfa_time=now if mfa else None,
            mfa_channels=channels,
        )
        await self._p.sessions.create(session)
        token = f"{SESSION_PREFIX}_{session.session_id}_{secret}"
        return Grant(session=session, session_token=token, access=self._mint(session, channel))

    def _mint(self, session: Session, channel: Channel) -> AccessToken:
        now = self._clock.now()
        expires = min(now + timedelta(seconds=self.policy.access_token_s), session.expires_at)
        claims = {
            "iss": self.policy.issuer,
            "sub": session.user_id,
            "aud": channel.value,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": secrets.token_urlsafe(12),
            "sid": session.session_id,
        }
        lifetime = int((expires - now).total_seconds())
        return AccessToken(self._p.tokens.encode(claims), channel, expires, lifetime, session.user_id)

    async def session_of(self, session_token: object) -> Session:
        """The live session a session token opens; `AuthenticationError` otherwise."""
        if not isinstance(session_token, str):
            raise AuthenticationError(_SESSION_ENDED)
        prefix, _, rest = session_token.partition("_")
        session_id, _, secret = rest.partition("_")
        if prefix != SESSION_PREFIX or not session_id or not secret:
            raise AuthenticationError("The credential is not a session token.")
        session = await self._p.sessions.get(session_id)
        if session is None or not hmac.compare_digest(session.secret_hash, hash_token_secret(secret)):
            raise AuthenticationError(_SESSION_ENDED)
        if not session.is_live(self._clock.now()):
            raise AuthenticationError(_SESSION_ENDED)
        return session

    async def token(self, session_token: str, channel: Channel) -> AccessToken:
        """A short-lived token for `channel` from a session (cross-channel sign-on)."""
        session = await self.session_of(session_token)
        self._check_cross_channel(session, channel)
        if self.mfa.due(session.roles, channel) and channel not in session.mfa_channels:
            user = await self._p.users.get(session.user_id)
            if user is None:
                raise AuthenticationError(_SESSION_ENDED)
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
            await self._challenge(user, challenge)
        return self._mint(session, channel)

    def _check_cross_channel(self, session: Session, channel: Channel) -> None:
        if channel is not session.origin_channel and not self.policy.cross_channel_sso:
            raise ForbiddenError(
                f"Cross-channel sign-on is off: log in on the {channel.value} channel itself."
            )

    async def reauthenticate(
        self, session_token: str, password: str | None, channel: Channel, address: str
    ) -> Grant:
        """Step-up: prove again who you are (password, then a second factor when enrolled)."""
        session = await self.session_of(session_token)
        self._check_cross_channel(session, channel)
        user = await self._p.users.get(session.user_id)
        if user is None or user.disabled:
            raise AuthenticationError(_SESSION_ENDED)
        if user.source in ("local", "ldap"):
            if not isinstance(password, str) or not password:
                raise InvalidInputError("Give the password to re-authenticate.")
            await self._p.throttle.check(user.username, address)
            if await self._first_factor(user.username, password) is None:
                await self._p.throttle.failed(user.username, address)
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
            await self._challenge(user, challenge)
        await self._p.throttle.succeeded(user.username, address)
        now = self._clock.now()
        await self._p.sessions.reauthenticated(
            session.session_id, auth_time=now, mfa_time=session.mfa_time, mfa_channels=session.mfa_channels
        )
        self._cache.pop(session.session_id, None)
        session = await self._live_session(session.session_id)
        return Grant(session=session, session_token="", access=self._mint(session, channel))

    async def logout(self, credential: str, channel: Channel) -> str:
        """End the session behind a session token or a channel token; every derived token dies."""
        if credential.startswith(f"{SESSION_PREFIX}_"):
            session = await self.session_of(credential)
        else:
            principal = await self.authenticate(credential, channel)
            session = await self._live_session(principal.session_id or "")
        await self._p.sessions.revoke(session.session_id, self._clock.now())
        self._cache.pop(session.session_id, None)
        return session.user_id

    async def authenticate(self, token: str, channel: Channel) -> Principal:
        """The principal a channel token stands for, checked against its live session."""
        if token.startswith(f"{SESSION_PREFIX}_"):
            raise AuthenticationError("Exchange the session token for a channel token at /auth/token first.")
        claims = self._p.tokens.decode(token, audience=channel.value, issuer=self.policy.issuer)
        session = await self._cached_session(str(claims.get("sid", "")))
        if session is None or session.user_id != claims.get("sub"):
            raise AuthenticationError(_SESSION_ENDED)
        if self.mfa.due(session.roles, channel) and channel not in session.mfa_channels:
            raise AuthenticationError("This session has not passed the second factor this channel needs.")
        return Principal(
            id=session.user_id,
            kind=session.method,
            roles=session.roles,
            attributes=session.attributes,
            session_id=session.session_id,
            auth_time=session.auth_time,
        )

    async def _cached_session(self, session_id: str) -> Session | None:
        now_m = self._clock.monotonic()
        hit = self._cache.get(session_id)
        if hit is not None and now_m - hit[1] < self.policy.cache_s:
            session = hit[0]
        else:
            found = await self._p.sessions.get(session_id) if session_id else None
            if found is None:
                self._cache.pop(session_id, None)
                return None
            session = found
            if self.policy.cache_s > 0:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[session_id] = (session, now_m)
        return session if session.is_live(self._clock.now()) else None

    async def _live_session(self, session_id: str) -> Session:
        session = await self._p.sessions.get(session_id)
        if session is None or not session.is_live(self._clock.now()):
            raise AuthenticationError(_SESSION_ENDED)
        return session

    def forget_sessions(self) -> None:
        self._cache.clear()
