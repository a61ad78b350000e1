"""`EphemeralStore` in memory: short-lived login state and replay markers for one process.

`nexus.backends.redis_ephemeral.RedisEphemeralStore` serves every node of a cluster. Both expire
values on their own; `take` and `claim` are atomic.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

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
