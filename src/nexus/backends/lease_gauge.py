"""`LeaseGauge` in process memory: leases of things in use at once, for one node.

`nexus.backends.redis_lease_gauge.RedisLeaseGauge` counts across every node of a cluster. Both
expire a lease `ttl_s` after it was last taken or renewed. Imports only core.
"""

from __future__ import annotations

from nexus.core.ports import Clock
from nexus.core.telemetry import SystemClock
from nexus.errors import ConfigurationError

MAX_TTL_S = 365 * 24 * 3600.0
"""The longest lease: beyond it Redis could no longer hold an expiry time exactly."""


def check_lease_terms(*, ttl_s: float, limit: int = 1) -> None:
    """Refuse a `limit` below one and a `ttl_s` that is not a positive number of at most a year.

    Raises:
        ConfigurationError: the limit or the lifetime cannot be honoured.
    """
    if limit < 1:
        raise ConfigurationError(f"A lease limit must be at least 1, got {limit}.")
    # Written as `not (in range)` so NaN, which fails every comparison, is refused too.
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ConfigurationError(f"A lease ttl_s must be positive and at most {MAX_TTL_S:.0f}, got {ttl_s}.")


class MemoryLeaseGauge:
    """Leases in this process, on the clock's monotonic time.

    No operation awaits, so each is atomic on its event loop. A key's expired leases are dropped
    whenever the key is touched, and a key with no live lease is forgotten then (a key never
    touched again keeps at most `limit` stale entries).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._leases: dict[str, dict[str, float]] = {}

    async def acquire(self, key: str, lease_id: str, *, limit: int, ttl_s: float) -> int | None:
        """Take (or refresh) `lease_id` unless `limit` other leases are live: the count after it, or None."""
        check_lease_terms(ttl_s=ttl_s, limit=limit)
        now = self._clock.monotonic()
        leases = self._live(key, now)
        if lease_id not in leases and len(leases) >= limit:
            return None
        leases[lease_id] = now + ttl_s
        self._leases[key] = leases
        return len(leases)

    async def renew(self, key: str, lease_id: str, *, ttl_s: float) -> bool:
        """Extend a live lease to `ttl_s` from now; False when it has expired or was never taken."""
        check_lease_terms(ttl_s=ttl_s)
        now = self._clock.monotonic()
        leases = self._live(key, now)
        if lease_id not in leases:
            return False
        leases[lease_id] = now + ttl_s
        return True

    async def release(self, key: str, lease_id: str) -> None:
        """Give a lease back; nothing happens when it is gone already."""
        leases = self._live(key, self._clock.monotonic())
        leases.pop(lease_id, None)
        if not leases:
            self._leases.pop(key, None)

    async def count(self, key: str) -> int:
        """Live leases under `key`."""
        return len(self._live(key, self._clock.monotonic()))

    async def ping(self) -> None:
        """Process memory always answers."""
        return None

    async def close(self) -> None:
        """Drop every lease."""
        self._leases.clear()

    def _live(self, key: str, now: float) -> dict[str, float]:
        """The key's leases without the expired ones (an empty, unstored dict for an idle key)."""
        leases = self._leases.get(key)
        if leases is None:
            return {}
        for lease_id in [lease_id for lease_id, expiry in leases.items() if expiry <= now]:
            del leases[lease_id]
        if not leases:
            del self._leases[key]
        return leases
