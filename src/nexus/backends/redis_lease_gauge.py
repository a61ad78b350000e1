"""`LeaseGauge` in Redis, shared by every Nexus node: one sorted set per key, lease id -> expiry.

Expiry times come from the Redis server's clock, so nodes whose clocks disagree still agree on
which leases are live. Redis failures become `DependencyUnavailableError`. Needs Redis 5 or later
(scripts that read TIME before writing). Loaded only when a `redis_url` is configured.
"""

from __future__ import annotations

import math

import redis.asyncio
import redis.exceptions

from nexus.backends.lease_gauge import check_lease_terms
from nexus.backends.redis_url import redis_client, redis_location
from nexus.errors import DependencyUnavailableError

_IDLE_GRACE_MS = 1000
"""How long a key outlives its longest lease before Redis deletes it."""

# Server time in milliseconds; scores are exact as Lua numbers (and in the 14 digits Lua prints them
# with) because a lease lasts at most a year.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local key = KEYS[1]
"""

# An idle key vanishes on its own a little after its longest lease, so no sweeper is needed.
_EXPIRE_AFTER_LONGEST = """
local longest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', key, tonumber(longest[2]) - now + tonumber(ARGV[4]))
"""

# ARGV: lease id, limit, ttl ms, grace ms. The count after taking the lease, or nil at the limit.
_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local count = redis.call('ZCARD', key)
if not redis.call('ZSCORE', key, ARGV[1]) then
  if count >= tonumber(ARGV[2]) then
    return false
  end
  count = count + 1
end
redis.call('ZADD', key, now + tonumber(ARGV[3]), ARGV[1])
"""
    + _EXPIRE_AFTER_LONGEST
    + "return count\n"
)

# ARGV: lease id, (unused), ttl ms, grace ms. 1 when the live lease was extended, else 0.
_RENEW = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if not redis.call('ZSCORE', key, ARGV[1]) then
  return 0
end
redis.call('ZADD', key, 'XX', now + tonumber(ARGV[3]), ARGV[1])
"""
    + _EXPIRE_AFTER_LONGEST
    + "return 1\n"
)

# Read-only: leases expiring after now.
_COUNT = _NOW + "return redis.call('ZCOUNT', key, '(' .. now, '+inf')\n"


class RedisLeaseGauge:
    """Leases in Redis, so every Nexus node counts the same ones.

    Taking and renewing are Lua scripts (EVALSHA), so the check and the change are one atomic step.

    Args:
        url: a `redis://` or `rediss://` URL (credentials allowed; they never appear in errors).
        key_prefix: prefix of every Redis key this gauge writes.
        timeout_s: connect and command timeout; a slow Redis fails the call rather than stalling it.

    Raises:
        ConfigurationError: `url` is not a usable Redis URL.
    """

    def __init__(self, url: str, *, key_prefix: str = "nexus:lease:", timeout_s: float = 2.0) -> None:
        self._location = redis_location(url)
        self._prefix = key_prefix
        self._client = redis_client(url, timeout_s=timeout_s)
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)
        self._count = self._client.register_script(_COUNT)

    async def acquire(self, key: str, lease_id: str, *, limit: int, ttl_s: float) -> int | None:
        """Take (or refresh) `lease_id` unless `limit` other leases are live: the count after it, or None.

        Raises:
            ConfigurationError: `limit` is below 1 or `ttl_s` is not positive.
            DependencyUnavailableError: Redis could not be reached or refused the command.
        """
        check_lease_terms(ttl_s=ttl_s, limit=limit)
        args = (lease_id, limit, _ms(ttl_s), _IDLE_GRACE_MS)
        try:
            count = await self._acquire(keys=[self._prefix + key], args=args)
        except redis.exceptions.RedisError as exc:
            raise self._unavailable() from exc
        return None if count is None else int(count)

    async def renew(self, key: str, lease_id: str, *, ttl_s: float) -> bool:
        """Extend a live lease to `ttl_s` from now; False when it has expired or was never taken.

        Raises:
            ConfigurationError: `ttl_s` is not positive.
            DependencyUnavailableError: Redis could not be reached or refused the command.
        """
        check_lease_terms(ttl_s=ttl_s)
        args = (lease_id, 0, _ms(ttl_s), _IDLE_GRACE_MS)
        try:
            renewed = await self._renew(keys=[self._prefix + key], args=args)
        except redis.exceptions.RedisError as exc:
            raise self._unavailable() from exc
        return bool(renewed)

    async def release(self, key: str, lease_id: str) -> None:
        """Give a lease back; nothing happens when it is gone already.

        Raises:
            DependencyUnavailableError: Redis could not be reached or refused the command.
        """
        try:
            await self._client.zrem(self._prefix + key, lease_id)
        except redis.exceptions.RedisError as exc:
            raise self._unavailable() from exc

    async def count(self, key: str) -> int:
        """Live leases under `key`, on every node.

        Raises:
            DependencyUnavailableError: Redis could not be reached or refused the command.
        """
        try:
            return int(await self._count(keys=[self._prefix + key]))
        except redis.exceptions.RedisError as exc:
            raise self._unavailable() from exc

    async def ping(self) -> None:
        """Check that Redis answers; for start-up and readiness checks.

        Raises:
            DependencyUnavailableError: Redis could not be reached.
        """
        try:
            await self._client.ping()
        except redis.exceptions.RedisError as exc:
            raise self._unavailable() from exc

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._client.aclose()

    def _unavailable(self) -> DependencyUnavailableError:
        return DependencyUnavailableError(f"Quota leases at {self._location} are unavailable.")


def _ms(ttl_s: float) -> int:
    # Rounded up, so a lease never lasts less than asked.
    return max(1, math.ceil(ttl_s * 1000))
