"""The second step of a login: asking for it, answering it, enrolling factors, recovery codes.

Pending challenges are kept by `ChallengeBook` (challenges.py). Verifying TOTP, text-message codes,
recovery codes and hardware keys happens here; sessions open through `AccountStanding`, only for an
account unchanged since its login began. Must not import the service (it imports this).
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from nexus.core.auth.challenges import CHALLENGE_GONE, ChallengeBook
from nexus.core.auth.model import Factor, FactorKind, User, mask_phone
from nexus.core.auth.parts import IdentityParts
from nexus.core.auth.policy import ALL_CHANNELS, MfaPolicy
from nexus.core.auth.recovery import new_recovery_codes, normalize_recovery_code
from nexus.core.auth.sessions import Grant, SessionKeeper, hash_token_secret
from nexus.core.auth.standing import AccountStanding
from nexus.core.ports import Clock
from nexus.core.types import Channel
from nexus.errors import (
    AuthenticationError,
    InvalidInputError,
    MfaEnrollmentRequiredError,
    MfaRequiredError,
)

# A channel-token challenge proves only a session token: it may add a channel, never a first factor.
_ENROLLING_PURPOSES = frozenset({"login", "reauth"})
RECOVERY_CODES = 10
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A factor being enrolled: what the user's device needs (URI, WebAuthn options) and its id."""

    factor_id: str
    kind: FactorKind
    details: Mapping[str, Any]


class SecondFactors:
    """Asks for, checks and enrolls second factors; a passed challenge opens or refreshes a session."""

    def __init__(
        self,
        parts: IdentityParts,
        sessions: SessionKeeper,
        standing: AccountStanding,
        clock: Clock,
        *,
        mfa: MfaPolicy,
        issuer: str,
    ) -> None:
        self._p = parts
        self._sessions = sessions
        self._standing = standing
        self._book = ChallengeBook(parts.ephemeral, standing, clock, mfa=mfa)
        self._clock = clock
        self._mfa = mfa
        self._issuer = issuer

    # -- challenges ------------------------------------------------------------------------------

    async def challenge(self, user: User, challenge: dict[str, Any]) -> NoReturn:
        """Store a pending second-factor step and raise the error that asks for it.

        `challenge` names the purpose, user, method, channel and the (account, address) its wrong
        answers are throttled under; `user` is the account as the first factor found it.
        """
        factors = [f for f in await self._usable_factors(user.user_id) if f.kind is not FactorKind.RECOVERY]
        challenge_id = await self._book.open(user, challenge)
        if not factors:
            raise MfaEnrollmentRequiredError(
                "A second factor is required and none is enrolled: enroll one with this challenge.",
                challenge_id=challenge_id,
                methods=sorted(kind.value for kind in self._mfa.methods if kind is not FactorKind.RECOVERY),
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
            if f.active and f.used_at is None and self._mfa.accepts(f.kind)
        ]

    async def challenge_owner(self, challenge_id: object) -> str | None:
        """The user a pending challenge belongs to (for the audit of its steps), without using it."""
        return await self._book.owner_id(challenge_id)

    async def send_sms_code(self, challenge_id: str) -> str:
        """Text a one-time code to the user's enrolled phone; returns the masked number."""
        cid, challenge = await self._book.take(challenge_id)
        try:
            sender = self._p.sms
            user = await self._p.users.get(challenge["user_id"])
            factor = None
            if user is not None:
                factor = next(
                    (f for f in await self._usable_factors(user.user_id) if f.kind is FactorKind.SMS), None
                )
            if sender is None or factor is None or not self._mfa.accepts(FactorKind.SMS):
                raise InvalidInputError("No text-message factor is available for this challenge.")
            self._book.count_text(cid, challenge)
            code = self._book.new_sms_code(challenge)
            await sender.send(factor.secret, f"Your Nexus sign-in code is {code}. {self._book.sms_expiry()}")
            return mask_phone(factor.secret)
        finally:
            await self._book.put(cid, challenge)

    async def hardware_key_options(self, challenge_id: str) -> dict[str, Any]:
        """WebAuthn assertion options for the user's registered keys."""
        cid, challenge = await self._book.take(challenge_id)
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
            await self._book.put(cid, challenge)

    # -- answering -------------------------------------------------------------------------------

    async def answer(
        self, challenge_id: str, method: str, response: Any, *, tenant_id: str | None = None
    ) -> Grant:
        """Answer a second-factor challenge. On success the login (or step-up) completes."""
        cid, challenge = await self._take_on_route(challenge_id, tenant_id)
        user = await self._book.owner(challenge)
        if challenge.get("enroll"):
            await self._book.put(cid, challenge)
            raise InvalidInputError("Activate the factor being enrolled first.")
        try:
            kind = FactorKind(method)
        except ValueError:
            kind = None
        if kind is None or not self._mfa.accepts(kind):
            await self._book.put(cid, challenge)
            raise InvalidInputError(f"The method must be one of: {', '.join(sorted(self._methods()))}.")
        # Counted before checking, like a password: concurrent answers cannot outrun the limit.
        throttle = self._p.throttle
        attempt = await throttle.attempt(challenge["account"], challenge["address"], second_factor=True)
        if not await self._verify_factor(user, kind, response, challenge):
            await throttle.failed(attempt)
            challenge["attempts"] = challenge.get("attempts", 0) + 1
            if challenge["attempts"] < self._mfa.max_attempts:
                await self._book.put(cid, challenge)
                raise AuthenticationError("The code is wrong, expired or already used.", challenge_id=cid)
            raise AuthenticationError("Too many wrong codes; log in again.")
        return await self._complete(user, challenge)

    async def _take_on_route(self, challenge_id: str, tenant_id: str | None) -> tuple[str, dict[str, Any]]:
        """The challenge, when it is not a login begun on another tenant's route (or the platform's)."""
        cid, challenge = await self._book.take(challenge_id)
        if challenge["purpose"] == "login" and challenge.get("tenant_id") != tenant_id:
            # Unknown there, and left in place: the login goes on where it began.
            await self._book.put(cid, challenge)
            raise AuthenticationError(CHALLENGE_GONE)
        return cid, challenge

    def _methods(self) -> set[str]:
        return {kind.value for kind in self._mfa.methods} | {FactorKind.RECOVERY.value}

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
            return self._book.verify_sms(challenge, response)
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
        if purpose == "login":
            tenant_id = challenge.get("tenant_id")
            if tenant_id is not None and tenant_id not in user.tenants:
                raise AuthenticationError(CHALLENGE_GONE)  # left the tenant while the login waited
            grant = await self._standing.open_session(
                user, challenge["fp"], challenge["method"], channel, mfa=True, tenant_id=tenant_id
            )
            if grant is None:
                raise AuthenticationError(CHALLENGE_GONE)
        else:
            session = await self._sessions.live(challenge["session_id"])
            now = self._clock.now()
            channels = ALL_CHANNELS if self._mfa.session_binding else session.mfa_channels | {channel}
            # A step-up proves the user again; a channel's own second factor keeps the old proof time.
            auth_time = now if purpose == "reauth" else session.auth_time
            grant = await self._sessions.reauthenticated(
                session.session_id, channel, auth_time=auth_time, mfa_time=now, mfa_channels=channels
            )
        # Only a finished login (second factor included) clears failures and trusts the address.
        await self._p.throttle.succeeded(challenge["account"], challenge["address"])
        return grant

    # -- enrollment ------------------------------------------------------------------------------

    async def enroll(self, challenge_id: str, method: str, *, phone: str | None = None) -> Enrollment:
        """Start enrolling a factor during a login whose MFA is due but has none.

        Enrolling again on the same challenge replaces the factor it was enrolling.
        """
        cid, challenge = await self._book.take(challenge_id)
        user = await self._enrolling_owner(challenge)
        try:
            # Enrolling during a login is trust on first use; with a factor in place it would let a
            # password alone replace it.
            if any(f.kind is not FactorKind.RECOVERY for f in await self._usable_factors(user.user_id)):
                raise InvalidInputError(
                    "This account already has a second factor; answer the challenge with it."
                )
            if method == FactorKind.SMS.value:
                self._book.count_text(cid, challenge)
            enrollment = await self.start_enrollment(user, method, phone=phone)
            pending = challenge.pop("enroll", None)
            if pending:
                await self._p.factors.remove(pending)
            challenge.pop("webauthn", None)
            challenge.pop("sms", None)
            challenge["enroll"] = enrollment.factor_id
            if enrollment.kind is FactorKind.HARDWARE_KEY:
                challenge["webauthn"] = enrollment.details["challenge"]
            if enrollment.kind is FactorKind.SMS:
                code = self._book.new_sms_code(challenge)
                if self._p.sms is not None and phone:
                    await self._p.sms.send(
                        phone, f"Your Nexus enrollment code is {code}. {self._book.sms_expiry()}"
                    )
            return enrollment
        finally:
            await self._book.put(cid, challenge)

    async def _enrolling_owner(self, challenge: Mapping[str, Any]) -> User:
        """The challenge's user, when the challenge may enroll a factor (it followed a password)."""
        user = await self._book.owner(challenge)
        if challenge.get("purpose") not in _ENROLLING_PURPOSES:
            raise InvalidInputError(
                "Enroll a second factor while logging in (or re-authenticating), not with a session token."
            )
        return user

    async def start_enrollment(self, user: User, method: str, *, phone: str | None = None) -> Enrollment:
        try:
            kind = FactorKind(method)
        except ValueError:
            kind = None
        if kind is None or kind is FactorKind.RECOVERY or kind not in self._mfa.methods:
            raise InvalidInputError(
                f"The method must be one of: {', '.join(sorted(m.value for m in self._mfa.methods))}."
            )
        factor_id = secrets.token_hex(8)
        now = self._clock.now()
        if kind is FactorKind.TOTP:
            otp = self._require(self._p.otp, "TOTP")
            secret = otp.new_secret()
            await self._p.factors.add(
                Factor(factor_id, user.user_id, kind, secret, now, label="authenticator app")
            )
            uri = otp.provisioning_uri(secret, user.username, self._issuer)
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

    async def activate(
        self, challenge_id: str, response: Any, *, tenant_id: str | None = None
    ) -> tuple[Grant, list[str]]:
        """Prove the enrolled factor works; activates it, hands out recovery codes, finishes the login."""
        cid, challenge = await self._take_on_route(challenge_id, tenant_id)
        factor_id = challenge.get("enroll")
        user = await self._enrolling_owner(challenge)
        if not factor_id:
            await self._book.put(cid, challenge)
            raise InvalidInputError("Enroll a second factor with this challenge before activating one.")
        ok = await self._activate_factor(user, factor_id, response, challenge)
        if not ok:
            challenge["attempts"] = challenge.get("attempts", 0) + 1
            if challenge["attempts"] < self._mfa.max_attempts:
                await self._book.put(cid, challenge)
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
            if not isinstance(response, str) or not self._book.verify_sms(challenge, response):
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
