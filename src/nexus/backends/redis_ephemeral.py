"""`EphemeralStore` in Redis: a login begun on one node can finish on another.

Loaded only when a `redis_url` is configured.
"""

from __future__ import annotations

import redis.asyncio
import redis.exceptions

from nexus.backends.redis_url import redis_client
from nexus.errors import DependencyUnavailableError


class RedisEphemeralStore:
    """Values in Redis with a TTL, so a login begun on one node can finish on another."""

    def __init__(self, url: str, *, key_prefix: str = "nexus:eph:", timeout_s: float = 2.0) -> None:
        self._prefix = key_prefix
        self._client = redis_client(url, timeout_s=timeout_s, decode_responses=True)

    async def put(self, key: str, value: str, ttl_s: float) -> None:
        await self._do(self._client.set(self._prefix + key, value, px=_ms(ttl_s)))

    async def get(self, key: str) -> str | None:
        value = await self._do(self._client.get(self._prefix + key))
        return None if value is None else str(value)

    async def take(self, key: str) -> str | None:
        value = await self._do(self._client.getdel(self._prefix + key))
        return None if value is None else str(value)

    async def claim(self, key: str, ttl_s: float) -> bool:
        created = await self._do(self._client.set(self._prefix + key, "1", px=_ms(ttl_s), nx=True))
        return bool(created)

    async def ping(self) -> None:
        await self._do(self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()

    async def _do(self, command: object) -> object:
        try:
            return await command  # type: ignore[misc]
        except redis.exceptions.RedisError as exc:
            raise DependencyUnavailableError("The session store (Redis) is unavailable.") from exc


def _ms(ttl_s: float) -> int:
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    return max(1, int(ttl_s * 1000))
