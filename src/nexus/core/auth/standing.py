"""Whether an account still stands as it did when a login began: there, enabled, same password, not revoked.

A login carries a fingerprint of its account from the first factor to its session, so a password
reset, a disable or a revocation landing meanwhile (during the slow password check, or while a
second-factor challenge waits) stops it. Must not import the service or the second factors.
"""

from __future__ import annotations

import hmac
import secrets

from nexus.core.auth.model import User
from nexus.core.auth.ports import EphemeralStore, UserStore
from nexus.core.auth.sessions import Grant, SessionKeeper, hash_token_secret
from nexus.core.types import Channel


class AccountStanding:
    """Fingerprints accounts, revokes their logins in flight, and opens sessions only for unchanged ones."""

    def __init__(
        self, users: UserStore, marks: EphemeralStore, sessions: SessionKeeper, *, marker_ttl_s: float
    ) -> None:
        self._users = users
        self._marks = marks
        self._sessions = sessions
        # A revocation marker must outlive every login begun before it, or those would match again.
        self._marker_ttl_s = marker_ttl_s

    async def fingerprint(self, user: User) -> str:
        """What a login in flight remembers of `user`: its password, disabled flag and last revocation."""
        marker = await self._marks.get(_marker_key(user.user_id)) or ""
        return hash_token_secret(f"{user.password_hash or ''}\0{user.disabled}\0{marker}")

    async def current(self, user_id: str, fingerprint: object) -> User | None:
        """The account as stored now, when it still stands as `fingerprint` recorded it; else None."""
        user = await self._users.get(user_id)
        if user is None or user.disabled or not isinstance(fingerprint, str):
            return None
        if not hmac.compare_digest(await self.fingerprint(user), fingerprint):
            return None
        return user

    async def revoke(self, user_id: str) -> int:
        """End the user's sessions and every login of theirs still in flight; how many sessions ended."""
        await self._marks.put(_marker_key(user_id), secrets.token_hex(8), self._marker_ttl_s)
        return await self._sessions.revoke_user(user_id)

    async def open_session(
        self,
        user: User,
        fingerprint: str,
        method: str,
        channel: Channel,
        *,
        mfa: bool,
        tenant_id: str | None = None,
    ) -> Grant | None:
        """The session of a passed login (in `tenant_id`), or None when the account changed since
        the login began."""
        grant = await self._sessions.open(user, method, channel, mfa=mfa, tenant_id=tenant_id)
        # Confirmed after opening: a change before this read shows here, and a change after it
        # finds the session in place and revokes it.
        if await self.current(user.user_id, fingerprint) is None:
            await self._sessions.end(grant.session.session_id)
            return None
        return grant


def _marker_key(user_id: str) -> str:
    # External user ids carry the directory name or provider subject: keep them out of Redis keys.
    return f"revoked_before:{hash_token_secret(user_id)[:32]}"
