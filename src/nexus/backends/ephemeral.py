"""`EphemeralStore` implementations: short-lived login state and replay markers.

`MemoryEphemeralStore` serves one process; `RedisEphemeralStore` every node of a cluster. Both
expire values on their own; `take` and `claim` are atomic.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

import redis.asyncio
import redis.exceptions

from nexus.errors import DependencyUnavailableError

_MAX_ENTRIES = 100_000


class MemoryEphemeralStore:
    """A dict with deadlines. Operations never await, so each one is atomic on its event loop."""

    def __init__(
        self, *, monotonic: Callable[[], float] = time.monotonic, max_entries: int = _MAX_ENTRIES
    ) -> None:
        self._now = monotonic
        self._max = max_entries
        self._values: dict[str, tuple[str, float]] = {}
        self._deadlines: list[tuple[float, str]] = []

    async def put(self, key: str, value: str, ttl_s: float) -> None:
        self._set(key, value, ttl_s)

    async def get(self, key: str) -> str | None:
        entry = self._live(key)
        return None if entry is None else entry[0]

    async def take(self, key: str) -> str | None:
        entry = self._live(key)
        if entry is None:
            return None
        del self._values[key]
        return entry[0]

    async def claim(self, key: str, ttl_s: float) -> bool:
        if self._live(key) is not None:
            return False
        self._set(key, "1", ttl_s)
        return True

    async def close(self) -> None:
        self._values.clear()
        self._deadlines.clear()

    def _live(self, key: str) -> tuple[str, float] | None:
        entry = self._values.get(key)
        if entry is not None and entry[1] <= self._now():
            del self._values[key]
            return None
        return entry

    def _set(self, key: str, value: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        now = self._now()
        self._prune(now)
        if len(self._values) >= self._max and key not in self._values:
            # Full of live entries: refuse rather than evict, since evicting a replay marker
            # would let a replay through.
            raise DependencyUnavailableError("The login state store is full; try again shortly.")
        deadline = now + ttl_s
        self._values[key] = (value, deadline)
        heapq.heappush(self._deadlines, (deadline, key))

    def _prune(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, key = heapq.heappop(deadlines)
            entry = self._values.get(key)
            if entry is not None and entry[1] <= now:
                del self._values[key]


class RedisEphemeralStore:
    """Values in Redis with a TTL, so a login begun on one node can finish on another."""

    def __init__(self, url: str, *, key_prefix: str = "nexus:eph:", timeout_s: float = 2.0) -> None:
        self._prefix = key_prefix
        self._client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, decode_responses=True
        )

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
