"""Rate-limit counters in Redis (`CounterStore`), shared by every Nexus node.

Counting is the `limits` moving window of `nexus.backends.counters`; Redis failures become
`DependencyUnavailableError`. Loaded only when a `redis_url` is configured.
"""

from __future__ import annotations

import redis.asyncio
import redis.exceptions
from limits.aio.storage import RedisStorage

from nexus.backends.counters import _LimitsCounter
from nexus.backends.redis_url import redis_location, redis_pool
from nexus.core.types import Usage
from nexus.errors import DependencyUnavailableError


class RedisCounterStore:
    """Counters in Redis, so every Nexus node sees the same counts.

    Args:
        url: a `redis://` or `rediss://` URL (credentials allowed; they never appear in errors).
        key_prefix: prefix of every Redis key this store writes.
        timeout_s: connect and command timeout; a slow Redis fails the call rather than stalling it.

    Raises:
        ConfigurationError: `url` is not a usable Redis URL.
    """

    def __init__(self, url: str, *, key_prefix: str = "nexus", timeout_s: float = 2.0) -> None:
        self._location = redis_location(url)
        # The pool is ours, not the `limits` bridge's, so `close()` can release its connections.
        self._pool = redis_pool(url, timeout_s=timeout_s)
        storage = RedisStorage(
            url,
            implementation="redispy",
            key_prefix=key_prefix,
            # `limits` hands `connection_pool` to `redis.asyncio.Redis` (documented); its
            # annotation only lists scalar options.
            connection_pool=self._pool,  # type: ignore[arg-type]
        )
        self._counter = _LimitsCounter(storage)

    async def hit(self, key: str, *, limit: int, window_s: int, cost: int = 1) -> Usage:
        """Count `cost` against `key` and say whether it stayed within `limit` per `window_s`.

        Raises:
            DependencyUnavailableError: Redis could not be reached or refused the command.
        """
        try:
            return await self._counter.hit(key, limit=limit, window_s=window_s, cost=cost)
        except redis.exceptions.RedisError as exc:
            raise self._unavailable() from exc

    async def clear(self, key: str) -> None:
        """Forget every hit counted against `key`, on every node."""
        try:
            await self._counter.clear(key)
        except redis.exceptions.RedisError as exc:
            raise self._unavailable() from exc

    async def ping(self) -> None:
        """Check that Redis answers; for start-up and readiness checks.

        Raises:
            DependencyUnavailableError: Redis could not be reached.
        """
        client = redis.asyncio.Redis(connection_pool=self._pool)
        try:
            await client.ping()
        except redis.exceptions.RedisError as exc:
            raise self._unavailable() from exc
        finally:
            await client.aclose(close_connection_pool=False)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()

    def _unavailable(self) -> DependencyUnavailableError:
        return DependencyUnavailableError(f"Rate-limit counters at {self._location} are unavailable.")
