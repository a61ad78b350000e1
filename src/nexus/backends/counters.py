"""Rate-limit counters (`CounterStore`): in process memory, or Redis shared by every node.

Both count with the `limits` library's moving-window strategy; Redis failures become
`DependencyUnavailableError`. Imports no channel code.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from nexus.core.ports import CounterStore
from nexus.core.types import Usage
from nexus.errors import ConfigurationError, DependencyUnavailableError

_NAMESPACE = "counter"
_REDIS_SCHEMES = frozenset({"redis", "rediss"})


def _storage_key(key: str) -> str:
    return f"{_NAMESPACE}/{key}"


class _Window(RateLimitItemPerSecond):
    """`limit` hits per `window_s` seconds, stored under the caller's key alone.

    `limits` puts the amount and period into its storage keys; leaving them out lets `clear(key)`
    reach the counter without knowing which limit it was hit with (on any node).
    """

    def key_for(self, *identifiers: bytes | str | int | float) -> str:
        return _storage_key("/".join(str(part) for part in identifiers))


class _LimitsCounter:
    """The counting both stores share: one strategy over one `limits` storage."""

    def __init__(self, storage: MemoryStorage | RedisStorage) -> None:
        self._storage = storage
        # Moving window: exact (never more than `limit` in any `window_s` span), so a denied caller
        # retrying after `reset_after_s` really gets in; its O(limit) memory per key is fine here.
        self._strategy = MovingWindowRateLimiter(storage)
        self._windows: dict[tuple[int, int], _Window] = {}

    def _window(self, limit: int, window_s: int) -> _Window:
        window = self._windows.get((limit, window_s))
        if window is None:
            if limit < 1 or window_s < 1:
                raise ValueError(f"limit and window_s must be positive, got {limit} per {window_s} s")
            window = self._windows[(limit, window_s)] = _Window(limit, window_s)
        return window

    async def hit(self, key: str, *, limit: int, window_s: int, cost: int = 1) -> Usage:
        if cost < 1:
            raise ValueError(f"cost must be positive, got {cost}")
        window = self._window(limit, window_s)
        # The decision is atomic in the storage (a Lua script on Redis); the stats read after it
        # only describe the counter and may already include other callers' hits.
        allowed = await self._strategy.hit(window, key, cost=cost)
        stats = await self._strategy.get_window_stats(window, key)
        reset_after_s = stats.reset_time - time.time()
        if not allowed and reset_after_s <= 0:
            # Nothing in the window to expire (cost above limit): no wait can help sooner than a window.
            reset_after_s = float(window_s)
        return Usage(
            allowed=allowed,
            limit=limit,
            remaining=max(0, stats.remaining),
            reset_after_s=max(0.0, reset_after_s),
        )

    async def clear(self, key: str) -> None:
        await self._storage.clear(_storage_key(key))


class MemoryCounterStore:
    """Counters in this process only; the default when no `redis_url` is configured."""

    def __init__(self) -> None:
        self._storage = MemoryStorage()
        self._counter = _LimitsCounter(self._storage)

    async def hit(self, key: str, *, limit: int, window_s: int, cost: int = 1) -> Usage:
        """Count `cost` against `key` and say whether it stayed within `limit` per `window_s`."""
        return await self._counter.hit(key, limit=limit, window_s=window_s, cost=cost)

    async def clear(self, key: str) -> None:
        """Forget every hit counted against `key`."""
        await self._counter.clear(key)

    async def close(self) -> None:
        """Stop the storage's expiry task and drop all counters."""
        timer = self._storage.timer
        if timer is not None and not timer.done():
            timer.cancel()
            # The task swallows its own cancellation; waiting lets it finish before the loop closes.
            await asyncio.gather(timer, return_exceptions=True)
        await self._storage.reset()


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
        self._location = _location(url)
        # The pool is ours, not the `limits` bridge's, so `close()` can release its connections.
        try:
            self._pool: redis.asyncio.ConnectionPool = redis.asyncio.ConnectionPool.from_url(
                url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
            )
        except ValueError as exc:
            raise ConfigurationError(f"redis_url for {self._location} is not valid: {exc}") from exc
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


def _location(url: str) -> str:
    """`host:port` of a Redis URL, for messages: never its user name or password."""
    parts = urlsplit(url)
    if parts.scheme not in _REDIS_SCHEMES:
        raise ConfigurationError(
            f"redis_url must start with redis:// or rediss://, got scheme {parts.scheme or '(none)'!r}."
        )
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigurationError("redis_url has an invalid port.") from exc
    return f"redis {parts.hostname or 'localhost'}:{port}"


def open_counter_store(redis_url: str | None) -> CounterStore:
    """Return Redis counters for a `redis://`/`rediss://` URL, memory counters for None.

    Raises:
        ConfigurationError: the URL is not a usable Redis URL.
    """
    if redis_url is None:
        return MemoryCounterStore()
    return RedisCounterStore(redis_url)
