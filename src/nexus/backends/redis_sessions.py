"""`SessionStore` on Redis, so every node of a cluster sees the same sessions and revocations.

Each session is a hash that Redis deletes at `expires_at`; a set per user lists their session ids.
Every change is one Lua script, so it is atomic across nodes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TypeVar

import redis.asyncio
import redis.exceptions

from nexus.backends.redis_url import redis_client
from nexus.core.auth.model import Session
from nexus.core.types import Channel
from nexus.errors import DependencyUnavailableError, InvalidInputError

_T = TypeVar("_T")

# Extends a key's expiry to at least ARGV-given epoch milliseconds; never shortens it.
_EXPIRE_AT_LEAST: Final = """
local function expire_at_least(key, at)
  local pttl = redis.call('PTTL', key)
  if pttl >= 0 then
    local now = redis.call('TIME')
    if now[1] * 1000 + math.floor(now[2] / 1000) + pttl >= at then return end
  end
  redis.call('PEXPIREAT', key, at)
end
"""

# KEYS: session, user set. ARGV: session key prefix, session id, expiry ms, field/value pairs...
_CREATE: Final = (
    _EXPIRE_AT_LEAST
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then redis.call('SREM', KEYS[2], id) end
end
redis.call('SADD', KEYS[2], ARGV[2])
expire_at_least(KEYS[2], tonumber(ARGV[3]))
return 1
"""
)

# KEYS: session. ARGV: auth_time, mfa_channels, mfa_time (absent when none).
_REAUTHENTICATED: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'auth_time', ARGV[1], 'mfa_channels', ARGV[2])
if ARGV[3] then
  redis.call('HSET', KEYS[1], 'mfa_time', ARGV[3])
else
  redis.call('HDEL', KEYS[1], 'mfa_time')
end
return 1
"""

# KEYS: session. ARGV: revocation time. HSETNX keeps the first time.
_REVOKE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[1])
return 1
"""

# KEYS: user set. ARGV: session key prefix, revocation time. Counts the sessions that were live.
_REVOKE_USER: Final = """
local revoked = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('SREM', KEYS[1], id)
  elseif redis.call('HSETNX', key, 'revoked_at', ARGV[2]) == 1 then
    revoked = revoked + 1
  end
end
return revoked
"""


class RedisSessionStore:
    """Sessions as Redis hashes that expire by themselves; a revoked one reads as revoked until then."""

    def __init__(self, url: str, *, key_prefix: str = "nexus:sess:", timeout_s: float = 2.0) -> None:
        self._sessions = key_prefix + "s:"
        self._users = key_prefix + "u:"
        self._client = redis_client(url, timeout_s=timeout_s, decode_responses=True)
        self._create = self._client.register_script(_CREATE)
        self._reauthenticated = self._client.register_script(_REAUTHENTICATED)
        self._revoke = self._client.register_script(_REVOKE)
        self._revoke_user = self._client.register_script(_REVOKE_USER)

    async def create(self, session: Session) -> None:
        """Store a new session that Redis deletes at its `expires_at`.

        Raises:
            InvalidInputError: a session with this id already exists.
        """
        fields = _to_fields(session)
        expires_ms = math.ceil(_utc(session.expires_at, "expires_at").timestamp() * 1000)
        pairs = [item for pair in fields.items() for item in pair]
        created = await self._do(
            self._create(
                keys=[self._sessions + session.session_id, self._users + session.user_id],
                args=[self._sessions, session.session_id, expires_ms, *pairs],
            )
        )
        if not created:
            raise InvalidInputError("A session with this id already exists.")

    async def get(self, session_id: str) -> Session | None:
        """The session until it expires, revoked or not; None when unknown or expired."""
        fields = await self._do(self._client.hgetall(self._sessions + session_id))
        return _to_session(session_id, fields) if fields else None

    async def reauthenticated(
        self,
        session_id: str,
        *,
        auth_time: datetime,
        mfa_time: datetime | None,
        mfa_channels: frozenset[Channel],
    ) -> bool:
        """Replace the proof times and MFA channels of a live session; False if it is not live."""
        args = [_iso(auth_time, "auth_time"), _dump_channels(mfa_channels)]
        if mfa_time is not None:
            args.append(_iso(mfa_time, "mfa_time"))
        changed = await self._do(self._reauthenticated(keys=[self._sessions + session_id], args=args))
        return bool(changed)

    async def revoke(self, session_id: str, at: datetime) -> bool:
        """Mark the session revoked; the first revocation time is kept. False if unknown or expired."""
        revoked_at = _iso(at, "at")
        found = await self._do(self._revoke(keys=[self._sessions + session_id], args=[revoked_at]))
        return bool(found)

    async def revoke_user(self, user_id: str, at: datetime) -> int:
        """Revoke every live session of a user; how many there were."""
        revoked_at = _iso(at, "at")
        count = await self._do(
            self._revoke_user(keys=[self._users + user_id], args=[self._sessions, revoked_at])
        )
        return int(count)

    async def ping(self) -> None:
        await self._do(self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()

    async def _do(self, command: Awaitable[_T]) -> _T:
        try:
            return await command
        except redis.exceptions.RedisError as exc:
            # The URL (and any password in it) stays out of the message.
            raise DependencyUnavailableError("The session store (Redis) is unavailable.") from exc


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _iso(value: datetime, what: str) -> str:
    return _utc(value, what).isoformat()


def _dump_channels(channels: frozenset[Channel]) -> str:
    return json.dumps(sorted(Channel(channel).value for channel in channels))


def _to_fields(session: Session) -> dict[str, str]:
    try:
        attributes = json.dumps(dict(session.attributes), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError("Session.attributes must hold JSON values only") from exc
    fields = {
        "user_id": session.user_id,
        "username": session.username,
        "method": session.method,
        "roles": json.dumps(sorted(session.roles)),
        "attributes": attributes,
        "created_at": _iso(session.created_at, "created_at"),
        "expires_at": _iso(session.expires_at, "expires_at"),
        "auth_time": _iso(session.auth_time, "auth_time"),
        "origin_channel": Channel(session.origin_channel).value,
        "secret_hash": session.secret_hash,
        "mfa_channels": _dump_channels(session.mfa_channels),
        "tenants": json.dumps(sorted(session.tenants)),
    }
    if session.tenant_id is not None:
        fields["tenant_id"] = session.tenant_id
    if session.mfa_time is not None:
        fields["mfa_time"] = _iso(session.mfa_time, "mfa_time")
    if session.revoked_at is not None:
        fields["revoked_at"] = _iso(session.revoked_at, "revoked_at")
    return fields


def _to_session(session_id: str, fields: Mapping[Any, Any]) -> Session:
    # decode_responses=True: every key and value is a str.
    def optional(name: str) -> datetime | None:
        value = fields.get(name)
        return None if value is None else datetime.fromisoformat(value)

    return Session(
        session_id=session_id,
        user_id=fields["user_id"],
        username=fields["username"],
        method=fields["method"],
        roles=frozenset(json.loads(fields["roles"])),
        created_at=datetime.fromisoformat(fields["created_at"]),
        expires_at=datetime.fromisoformat(fields["expires_at"]),
        auth_time=datetime.fromisoformat(fields["auth_time"]),
        origin_channel=Channel(fields["origin_channel"]),
        secret_hash=fields["secret_hash"],
        attributes=MappingProxyType(json.loads(fields["attributes"])),
        mfa_time=optional("mfa_time"),
        mfa_channels=frozenset(Channel(channel) for channel in json.loads(fields["mfa_channels"])),
        revoked_at=optional("revoked_at"),
        tenant_id=fields.get("tenant_id"),
        # Sessions stored before tenancy have no such field: they belong to no tenant.
        tenants=frozenset(json.loads(fields.get("tenants", "[]"))),
    )
