"""Pending second-factor challenges: stored under a deadline fixed at their creation, tied to the
account as it stood when the login began, holding the text-message code they sent.

A challenge is a JSON object in the ephemeral store; taking it is atomic, so one challenge serves
one step at a time. Must not import the service or the second factors (factors.py uses this).
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

from nexus.core.auth.model import User
from nexus.core.auth.policy import MfaPolicy
from nexus.core.auth.ports import EphemeralStore
from nexus.core.auth.sessions import hash_token_secret
from nexus.core.auth.standing import AccountStanding
from nexus.core.ports import Clock
from nexus.errors import AuthenticationError

CHALLENGE_GONE = "The login challenge is unknown, used up or expired; log in again."


class ChallengeBook:
    """Opens, takes back and puts back pending challenges, and keeps the codes texted for them."""

    def __init__(self, store: EphemeralStore, standing: AccountStanding, clock: Clock, *, mfa: MfaPolicy):
        self._store = store
        self._standing = standing
        self._clock = clock
        self._mfa = mfa

    async def open(self, user: User, challenge: dict[str, Any]) -> str:
        """Store a new challenge for `user` (the account as the first factor found it); its id."""
        challenge_id = secrets.token_urlsafe(24)
        challenge["fp"] = await self._standing.fingerprint(user)
        challenge["attempts"] = 0
        challenge["until"] = self._clock.now().timestamp() + self._mfa.challenge_ttl_s
        await self.put(challenge_id, challenge)
        return challenge_id

    async def put(self, challenge_id: str, challenge: Mapping[str, Any]) -> None:
        # Put back with what is left of its life: answering or asking for codes never extends it.
        left = float(challenge["until"]) - self._clock.now().timestamp()
        if left > 0:
            await self._store.put(f"chal:{challenge_id}", json.dumps(challenge), left)

    async def take(self, challenge_id: object) -> tuple[str, dict[str, Any]]:
        """The challenge, removed from the store until `put` back; `AuthenticationError` if gone."""
        if not isinstance(challenge_id, str) or not 16 <= len(challenge_id) <= 64:
            raise AuthenticationError(CHALLENGE_GONE)
        raw = await self._store.take(f"chal:{challenge_id}")
        if raw is None:
            raise AuthenticationError(CHALLENGE_GONE)
        challenge: dict[str, Any] = json.loads(raw)
        if self._clock.now().timestamp() >= float(challenge.get("until", 0)):
            raise AuthenticationError(CHALLENGE_GONE)
        return challenge_id, challenge

    async def owner_id(self, challenge_id: object) -> str | None:
        """The user a pending challenge belongs to, without taking it."""
        if not isinstance(challenge_id, str) or not 16 <= len(challenge_id) <= 64:
            return None
        raw = await self._store.get(f"chal:{challenge_id}")
        if raw is None:
            return None
        owner = json.loads(raw).get("user_id")
        return owner if isinstance(owner, str) else None

    async def owner(self, challenge: Mapping[str, Any]) -> User:
        """The challenge's user, when the account still stands as it did when the login began."""
        user = await self._standing.current(challenge["user_id"], challenge.get("fp"))
        if user is None:
            raise AuthenticationError(CHALLENGE_GONE)
        return user

    # -- text-message codes ----------------------------------------------------------------------

    def count_text(self, challenge_id: str, challenge: dict[str, Any]) -> None:
        """Count one more text for `challenge`, or refuse it when its allowance is spent."""
        # Each text costs money and lands on a real phone: a few per challenge at most.
        if challenge.get("texts", 0) >= self._mfa.max_attempts:
            raise AuthenticationError(
                "Too many codes sent for this sign-in; use the last one or log in again.",
                challenge_id=challenge_id,
            )
        challenge["texts"] = challenge.get("texts", 0) + 1

    def new_sms_code(self, challenge: dict[str, Any]) -> str:
        """A fresh six-digit code for `challenge` (replacing any earlier one); only its hash is kept."""
        code = f"{secrets.randbelow(1_000_000):06d}"
        until = self._clock.now().timestamp() + self._mfa.sms_code_ttl_s
        challenge["sms"] = {"hash": hash_token_secret(code), "until": until}
        return code

    def sms_expiry(self) -> str:
        seconds = int(self._mfa.sms_code_ttl_s)
        return (
            f"It expires in {seconds // 60} minutes."
            if seconds >= 120
            else f"It expires in {seconds} seconds."
        )

    def verify_sms(self, challenge: dict[str, Any], code: str) -> bool:
        """The code texted for this challenge, unexpired; it is spent by this one try either way."""
        sent = challenge.pop("sms", None)
        if not sent or self._clock.now().timestamp() > float(sent["until"]):
            return False
        return hmac.compare_digest(sent["hash"], hash_token_secret(code.strip()))
