"""An in-process `limits` storage for the moving window that never leaves the event loop.

`limits`' own async memory storage hands an expiry sweep to a worker thread on nearly every hit,
which makes each rate-limited call contend for the GIL. This one prunes a key's timestamps when
the key is touched and sweeps idle keys inline now and then, so a hit is a few deque operations.
"""

from __future__ import annotations

import time
from collections import deque

from limits.aio.storage import MovingWindowSupport, Storage

_SWEEP_EVERY_HITS = 10_000


class LocalWindowStorage(Storage, MovingWindowSupport):
    """Moving-window entries per key in this process; atomic because nothing in a call awaits."""

    STORAGE_SCHEME = ["nexus-local"]  # noqa: RUF012  # read by limits' storage registry, never mutated

    def __init__(self) -> None:
        super().__init__()
        self._events: dict[str, deque[float]] = {}
        self._horizon: dict[str, float] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._hits = 0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def _window(self, key: str, expiry: float, now: float, *, create: bool) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            if not create:
                return deque()
            events = self._events[key] = deque()
        cutoff = now - expiry
        while events and events[0] <= cutoff:
            events.popleft()
        self._horizon[key] = now + expiry
        return events

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return self.hit(key, limit, expiry, amount)[0]

    def hit(self, key: str, limit: int, expiry: float, amount: int = 1) -> tuple[bool, float, int, float]:
        """Take `amount` entries if the window has room, and read the window after it, at one instant:
        (acquired, oldest entry in the window, entries in it, that instant)."""
        now = time.time()
        self._maybe_sweep(now)
        events = self._window(key, expiry, now, create=True)
        acquired = amount <= limit and len(events) + amount <= limit
        if acquired:
            events.extend([now] * amount)
        return acquired, events[0] if events else now, len(events), now

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        return self.peek(key, expiry)

    def peek(self, key: str, expiry: float) -> tuple[float, int]:
        """(oldest entry in the window, entries in it): `get_moving_window` without the await."""
        now = time.time()
        events = self._window(key, expiry, now, create=False)
        return (events[0], len(events)) if events else (now, 0)

    def _maybe_sweep(self, now: float) -> None:
        # Keys of callers that went quiet would otherwise stay forever; one pass per many hits.
        self._hits += 1
        if self._hits % _SWEEP_EVERY_HITS:
            return
        for key in [key for key, horizon in self._horizon.items() if horizon <= now]:
            self._events.pop(key, None)
            self._horizon.pop(key, None)
        for key in [key for key, (_, expires) in self._counters.items() if expires <= now]:
            self._counters.pop(key, None)

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = time.time()
        value, expires = self._counters.get(key, (0, now + expiry))
        if expires <= now:
            value, expires = 0, now + expiry
        self._counters[key] = (value + amount, expires)
        return value + amount

    async def get(self, key: str) -> int:
        value, expires = self._counters.get(key, (0, 0.0))
        return value if expires > time.time() else 0

    async def get_expiry(self, key: str) -> float:
        return self._counters.get(key, (0, time.time()))[1]

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self._events) + len(self._counters)
        self._events.clear()
        self._horizon.clear()
        self._counters.clear()
        return count

    async def clear(self, key: str) -> None:
        self._events.pop(key, None)
        self._horizon.pop(key, None)
        self._counters.pop(key, None)
