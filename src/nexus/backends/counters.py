"""Rate-limit counters (`CounterStore`): in process memory, or Redis shared by every node.

Both count with the `limits` library's moving-window strategy; Redis failures become
`DependencyUnavailableError`. Imports no channel code.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from limits import RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter

from nexus.backends.local_window import LocalWindowStorage
from nexus.core.ports import CounterStore
from nexus.core.types import Usage

if TYPE_CHECKING:
    from limits.aio.storage import RedisStorage

_NAMESPACE = "counter"


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

    def __init__(self, storage: LocalWindowStorage | RedisStorage) -> None:
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
        storage = self._storage
        if isinstance(storage, LocalWindowStorage):
            # In-process: the strategy's hit and its window stats, read at one instant, without
            # the strategy's async layers (nothing here awaits, so nobody else's hit comes between).
            allowed, oldest, count, now = storage.hit(_storage_key(key), window.amount, window_s, cost)
            reset_after_s, remaining = oldest + window_s - now, window.amount - count
        else:
            allowed = await self._strategy.hit(window, key, cost=cost)
            stats = await self._strategy.get_window_stats(window, key)
            reset_after_s, remaining = stats.reset_time - time.time(), stats.remaining
        if not allowed and reset_after_s <= 0:
            # Nothing in the window to expire (cost above limit): no wait can help sooner than a window.
            reset_after_s = float(window_s)
        return Usage(
            allowed=allowed,
            limit=limit,
            remaining=max(0, remaining),
            reset_after_s=max(0.0, reset_after_s),
        )

    async def clear(self, key: str) -> None:
        await self._storage.clear(_storage_key(key))


class MemoryCounterStore:
    """Counters in this process only; the default when no `redis_url` is configured."""

    def __init__(self) -> None:
        self._storage = LocalWindowStorage()
        self._counter = _LimitsCounter(self._storage)

    async def hit(self, key: str, *, limit: int, window_s: int, cost: int = 1) -> Usage:
        """Count `cost` against `key` and say whether it stayed within `limit` per `window_s`."""
        return await self._counter.hit(key, limit=limit, window_s=window_s, cost=cost)

    async def clear(self, key: str) -> None:
        """Forget every hit counted against `key`."""
        await self._counter.clear(key)

    async def ping(self) -> None:
        """Process memory always answers."""
        return None

    async def close(self) -> None:
        """Drop all counters."""
        await self._storage.reset()


def open_counter_store(redis_url: str | None) -> CounterStore:
    """Return Redis counters for a `redis://`/`rediss://` URL, memory counters for None.

    Raises:
        ConfigurationError: the URL is not a usable Redis URL.
    """
    if redis_url is None:
        return MemoryCounterStore()
    # Imported only when configured: the Redis client costs start-up time and memory otherwise.
    from nexus.backends.redis_counters import RedisCounterStore

    return RedisCounterStore(redis_url)
