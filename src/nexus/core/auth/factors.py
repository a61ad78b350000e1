"""The second step of a login: pending challenges, answering them, enrolling factors, recovery codes.

A challenge lives in the ephemeral store under a deadline fixed at its creation. Verifying TOTP,
text-message codes, recovery codes and hardware keys happens here; sessions open through the
`SessionKeeper`. Must not import the service (it imports this).
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from nexus.core.auth.model import Factor, FactorKind, User, mask_phone
from nexus.core.auth.parts import IdentityParts
from nexus.core.auth.policy import ALL_CHANNELS, MfaPolicy
from nexus.core.auth.recovery import new_recovery_codes, normalize_recovery_code
from nexus.core.auth.sessions import Grant, SessionKeeper, hash_token_secret
from nexus.core.ports import Clock
from nexus.core.types import Channel
from nexus.errors import (
    AuthenticationError,
    InvalidInputError,
    MfaEnrollmentRequiredError,
    MfaRequiredError,
)

CHALLENGE_GONE = "The login challenge is unknown, used up or expired; log in again."
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
        self, parts: IdentityParts, sessions: SessionKeeper, clock: Clock, *, mfa: MfaPolicy, issuer: str
    ) -> None:
        self._p = parts
        self._sessions = sessions
        self._clock = clock
        self._mfa = mfa
        self._issuer = issuer

    # -- challenges ------------------------------------------------------------------------------

    async def challenge(self, user: User, challenge: dict[str, Any]) -> NoReturn:
        """Store a pending second-factor step and raise the error that asks for it."""
        factors = [f for f in await self._usable_factors(user.user_id) if f.kind is not FactorKind.RECOVERY]
        challenge_id = secrets.token_urlsafe(24)
        challenge["attempts"] = 0
        challenge["until"] = self._clock.now().timestamp() + self._mfa.challenge_ttl_s
        await self._put_challenge(challenge_id, challenge)
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
            raise AuthenticationError(CHALLENGE_GONE)
        raw = await self._p.ephemeral.take(f"chal:{challenge_id}")
        if raw is None:
            raise AuthenticationError(CHALLENGE_GONE)
        challenge: dict[str, Any] = json.loads(raw)
        if self._clock.now().timestamp() >= float(challenge.get("until", 0)):
            raise AuthenticationError(CHALLENGE_GONE)
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
            if sender is None or factor is None or not self._mfa.accepts(FactorKind.SMS):
                raise InvalidInputError("No text-message factor is available for this challenge.")
            # Each text costs money and lands on a real phone: a few per challenge at most.
            if challenge.get("texts", 0) >= self._mfa.max_attempts:
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
        until = self._clock.now().timestamp() + self._mfa.sms_code_ttl_s
        challenge["sms"] = {"hash": hash_token_secret(code), "until": until}
        return code

    def _sms_expiry(self) -> str:
        seconds = int(self._mfa.sms_code_ttl_s)
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

    # -- answering -------------------------------------------------------------------------------

    async def answer(self, challenge_id: str, method: str, response: Any) -> Grant:
        """Answer a second-factor challenge. On success the login (or step-up) completes."""
        cid, challenge = await self._take_challenge(challenge_id)
        user = await self._p.users.get(challenge["user_id"])
        if user is None or user.disabled:
            raise AuthenticationError(CHALLENGE_GONE)
        await self._check_throttle(challenge)
        if challenge.get("enroll"):
            await self._put_challenge(cid, challenge)
            raise InvalidInputError("Activate the factor being enrolled first.")
        try:
            kind = FactorKind(method)
        except ValueError:
            kind = None
        if kind is None or not self._mfa.accepts(kind):
            await self._put_challenge(cid, challenge)
            raise InvalidInputError(f"The method must be one of: {', '.join(sorted(self._methods()))}.")
        if not await self._verify_factor(user, kind, response, challenge):
            await self._count_failure(challenge)
            challenge["attempts"] = challenge.get("attempts", 0) + 1
            if challenge["attempts"] < self._mfa.max_attempts:
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
            return await self._sessions.open(user, challenge["method"], channel, mfa=True)
        session = await self._sessions.live(challenge["session_id"])
        now = self._clock.now()
        channels = ALL_CHANNELS if self._mfa.session_binding else session.mfa_channels | {channel}
        # A step-up proves the user again; a channel's own second factor keeps the old proof time.
        auth_time = now if purpose == "reauth" else session.auth_time
        return await self._sessions.reauthenticated(
            session.session_id, channel, auth_time=auth_time, mfa_time=now, mfa_channels=channels
        )

    # -- enrollment ------------------------------------------------------------------------------

    async def enroll(self, challenge_id: str, method: str, *, phone: str | None = None) -> Enrollment:
        """Start enrolling a factor during a login whose MFA is due but has none."""
        cid, challenge = await self._take_challenge(challenge_id)
        try:
            user = await self._p.users.get(challenge["user_id"])
            if user is None:
                raise AuthenticationError(CHALLENGE_GONE)
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

    async def activate(self, challenge_id: str, response: Any) -> tuple[Grant, list[str]]:
        """Prove the enrolled factor works; activates it, hands out recovery codes, finishes the login."""
        cid, challenge = await self._take_challenge(challenge_id)
        factor_id = challenge.get("enroll")
        user = await self._p.users.get(challenge["user_id"])
        if user is None or user.disabled:
            raise AuthenticationError(CHALLENGE_GONE)
        if not factor_id:
            await self._put_challenge(cid, challenge)
            raise InvalidInputError("Enroll a second factor with this challenge before activating one.")
        ok = await self._activate_factor(user, factor_id, response, challenge)
        if not ok:
            challenge["attempts"] = challenge.get("attempts", 0) + 1
            if challenge["attempts"] < self._mfa.max_attempts:
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
