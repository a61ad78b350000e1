"""Sessions and the channel tokens derived from them: open, mint, look up, cache, revoke.

Knows nothing of passwords or second factors; the service decides when a session may open.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nexus.core.auth.model import Session, User
from nexus.core.auth.policy import ALL_CHANNELS, MfaPolicy, SessionPolicy
from nexus.core.auth.ports import SessionSeats, SessionStore, TokenCodec
from nexus.core.ports import Clock
from nexus.core.types import Channel, Principal
from nexus.errors import AuthenticationError, ForbiddenError

SESSION_PREFIX = "nxs"
SESSION_ENDED = "The session has ended or is unknown; log in again."
_CACHE_LIMIT = 10_000
_MAX_VERIFIED = 4_096


def hash_token_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


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


class SessionKeeper:
    """Opens sessions, mints channel tokens from them and turns those tokens back into principals."""

    def __init__(
        self,
        store: SessionStore,
        tokens: TokenCodec,
        clock: Clock,
        *,
        mfa: MfaPolicy,
        policy: SessionPolicy,
        seats: SessionSeats | None = None,
        tenant_admission: Callable[[str], None] | None = None,
    ) -> None:
        self._seats = seats
        self._admit_tenant = tenant_admission
        self._store = store
        self._tokens = tokens
        self._clock = clock
        self._mfa = mfa
        self._policy = policy
        self._cache: dict[str, tuple[Session, float, Principal]] = {}
        # Tokens whose signature, issuer, audience and times were checked: (token, channel) ->
        # (session id, subject, exp). A repeat call skips the signature check until `exp`; the
        # session is still checked on every call, so a logout ends the token as before.
        self._verified: dict[tuple[str, Channel], tuple[str, str, float]] = {}

    async def open(
        self, user: User, method: str, channel: Channel, *, mfa: bool, tenant_id: str | None = None
    ) -> Grant:
        """Start a session for `user` (its second factor passed or not) in `tenant_id` (None: the
        platform), holding the user's tenants as they are now, and a token for `channel`."""
        now = self._clock.now()
        secret = secrets.token_urlsafe(32)
        channels = (
            (ALL_CHANNELS if self._mfa.session_binding else frozenset({channel})) if mfa else frozenset()
        )
        session = Session(
            session_id=secrets.token_urlsafe(16).replace("_", "A").replace("-", "B"),
            user_id=user.user_id,
            username=user.username,
            method=method,
            roles=user.roles,
            created_at=now,
            expires_at=now + timedelta(seconds=self._policy.session_duration_s),
            auth_time=now,
            origin_channel=channel,
            secret_hash=hash_token_secret(secret),
            attributes=user.attributes,
            mfa_time=now if mfa else None,
            mfa_channels=channels,
            tenant_id=tenant_id,
            tenants=user.tenants,
        )
        if tenant_id is not None and self._admit_tenant is not None:
            # After the first factor and membership: only the tenant's members learn it is suspended.
            self._admit_tenant(tenant_id)
        if self._seats is not None:
            await self._seats.take(session)  # a full tenant refuses the login before it exists
        try:
            await self._store.create(session)
        except BaseException:
            if self._seats is not None:
                await self._seats.release(session)
            raise
        token = f"{SESSION_PREFIX}_{session.session_id}_{secret}"
        return Grant(session=session, session_token=token, access=self.mint(session, channel))

    def mint(self, session: Session, channel: Channel) -> AccessToken:
        """A channel token for `session`, never outliving it."""
        now = self._clock.now()
        expires = min(now + timedelta(seconds=self._policy.access_token_s), session.expires_at)
        claims = {
            "iss": self._policy.issuer,
            "sub": session.user_id,
            "aud": channel.value,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": secrets.token_urlsafe(12),
            "sid": session.session_id,
        }
        lifetime = int((expires - now).total_seconds())
        return AccessToken(self._tokens.encode(claims), channel, expires, lifetime, session.user_id)

    async def session_of(self, session_token: object) -> Session:
        """The live session a session token opens; `AuthenticationError` otherwise."""
        if not isinstance(session_token, str):
            raise AuthenticationError(SESSION_ENDED)
        prefix, _, rest = session_token.partition("_")
        session_id, _, secret = rest.partition("_")
        if prefix != SESSION_PREFIX or not session_id or not secret:
            raise AuthenticationError("The credential is not a session token.")
        session = await self._store.get(session_id)
        if session is None or not hmac.compare_digest(session.secret_hash, hash_token_secret(secret)):
            raise AuthenticationError(SESSION_ENDED)
        if not session.is_live(self._clock.now()):
            raise AuthenticationError(SESSION_ENDED)
        return session

    def check_cross_channel(self, session: Session, channel: Channel) -> None:
        """Refuse a token or step-up for another channel than the session's when policy says so."""
        if channel is not session.origin_channel and not self._policy.cross_channel_sso:
            raise ForbiddenError(
                f"Cross-channel sign-on is off: log in on the {channel.value} channel itself."
            )

    async def live(self, session_id: str) -> Session:
        """The session as stored now, when it is still live; `AuthenticationError` otherwise."""
        session = await self._store.get(session_id)
        if session is None or not session.is_live(self._clock.now()):
            raise AuthenticationError(SESSION_ENDED)
        return session

    async def reauthenticated(
        self,
        session_id: str,
        channel: Channel,
        *,
        auth_time: datetime,
        mfa_time: datetime | None,
        mfa_channels: frozenset[Channel],
    ) -> Grant:
        """Record a fresh proof on the session; returns it re-read, with a new token for `channel`."""
        await self._store.reauthenticated(
            session_id, auth_time=auth_time, mfa_time=mfa_time, mfa_channels=mfa_channels
        )
        self._cache.pop(session_id, None)
        session = await self.live(session_id)
        return Grant(session=session, session_token="", access=self.mint(session, channel))

    async def revoke_user(self, user_id: str) -> int:
        """End every session of a user; how many there were."""
        count = await self._store.revoke_user(user_id, self._clock.now())
        self._cache.clear()
        return count

    async def end(self, session_id: str) -> None:
        """Revoke one session; every token derived from it dies."""
        await self._store.revoke(session_id, self._clock.now())
        self._cache.pop(session_id, None)

    async def logout(self, credential: str, channel: Channel) -> str:
        """End the session behind a session token or a channel token; every derived token dies."""
        if credential.startswith(f"{SESSION_PREFIX}_"):
            session = await self.session_of(credential)
        else:
            principal = await self.authenticate(credential, channel)
            session = await self.live(principal.session_id or "")
        await self.end(session.session_id)
        if self._seats is not None:
            await self._seats.release(session)
        return session.user_id

    async def authenticate(self, token: str, channel: Channel) -> Principal:
        """The principal a channel token stands for, checked against its live session."""
        if token.startswith(f"{SESSION_PREFIX}_"):
            raise AuthenticationError("Exchange the session token for a channel token at /auth/token first.")
        session_id, subject = self._verify(token, channel)
        found = await self._cached(session_id)
        if found is None or found[0].user_id != subject:
            raise AuthenticationError(SESSION_ENDED)
        session, principal = found
        if self._mfa.due(session.roles, channel) and channel not in session.mfa_channels:
            raise AuthenticationError("This session has not passed the second factor this channel needs.")
        if self._seats is not None:
            await self._seats.keep(session, channel)
        return principal

    def _verify(self, token: str, channel: Channel) -> tuple[str, str]:
        """(session id, subject) of a valid token for `channel`; `AuthenticationError` otherwise."""
        key = (token, channel)
        hit = self._verified.get(key)
        if hit is not None and self._clock.now().timestamp() < hit[2]:
            return hit[0], hit[1]
        claims = self._tokens.decode(token, audience=channel.value, issuer=self._policy.issuer)
        session_id, subject = str(claims.get("sid", "")), str(claims.get("sub", ""))
        if len(self._verified) >= _MAX_VERIFIED:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[key] = (session_id, subject, float(claims["exp"]))
        return session_id, subject

    async def _cached(self, session_id: str) -> tuple[Session, Principal] | None:
        """The live session and the principal it stands for, both kept for `cache_s`."""
        now_m = self._clock.monotonic()
        hit = self._cache.get(session_id)
        if hit is not None and now_m - hit[1] < self._policy.cache_s:
            session, principal = hit[0], hit[2]
        else:
            found = await self._store.get(session_id) if session_id else None
            if found is None:
                self._cache.pop(session_id, None)
                return None
            session, principal = found, _principal_of(found)
            if self._policy.cache_s > 0:
                if len(self._cache) > _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[session_id] = (session, now_m, principal)
        return (session, principal) if session.is_live(self._clock.now()) else None

    def forget(self) -> None:
        """Drop every cached session and verified token, so the next check starts over."""
        self._cache.clear()
        self._verified.clear()


def _principal_of(session: Session) -> Principal:
    """Who calls with a token of `session`."""
    return Principal(
        id=session.user_id,
        kind=session.method,
        roles=session.roles,
        attributes=session.attributes,
        session_id=session.session_id,
        auth_time=session.auth_time,
        name=session.username,
        tenants=session.tenants,
        tenant_id=session.tenant_id,
    )
