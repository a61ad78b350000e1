"""Requests per minute per principal (and tenant), counted once across every channel."""

from __future__ import annotations

import math
from typing import Protocol

from nexus.core.ports import CounterStore
from nexus.core.types import Invocation
from nexus.errors import RateLimitedError

_WINDOW_S = 60


class Limiter(Protocol):
    async def check(self, invocation: Invocation) -> None:
        """Count the call; raise `RateLimitedError` when it is over the limit."""
        ...


class NoLimit:
    """No `rate_limit` configured."""

    async def check(self, invocation: Invocation) -> None:
        return None


class RateLimiter:
    """`per_minute` calls per principal; anonymous callers are counted per client address."""

    def __init__(self, store: CounterStore, per_minute: int) -> None:
        self._store = store
        self._limit = per_minute

    async def check(self, invocation: Invocation) -> None:
        principal = invocation.principal
        subject = f"anon:{invocation.client_addr}" if principal.is_anonymous else principal.id
        # Keyed by tenant as well: one tenant's traffic never spends another's budget.
        tenant = invocation.tenant_id
        key = f"rate:{subject}" if tenant is None else f"rate:t:{tenant}:{subject}"
        usage = await self._store.hit(key, limit=self._limit, window_s=_WINDOW_S)
        if not usage.allowed:
            retry_after = max(1, math.ceil(usage.reset_after_s))
            raise RateLimitedError(
                f"Rate limit of {self._limit} requests per minute exceeded; retry in {retry_after} s.",
                retry_after=retry_after,
            )
