"""Login throttling: failures counted per (account, address), per account and per address.

A limit crossed sets a lock marker that expires by itself. The per-account lock does not apply to
addresses from which that account logged in successfully before, so a distributed attacker can
only delay the real user on a new device, never lock them out for good.
"""

from __future__ import annotations

import hashlib
import math

from nexus.core.auth.policy import ThrottlePolicy
from nexus.core.auth.ports import EphemeralStore
from nexus.core.ports import Clock, CounterStore
from nexus.errors import AccountLockedError


def _tag(value: str) -> str:
    # Keys carry no raw usernames or addresses (they end up in Redis and its logs).
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class LoginThrottle:
    def __init__(self, counters: CounterStore, marks: EphemeralStore, clock: Clock, policy: ThrottlePolicy):
        self._counters = counters
        self._marks = marks
        self._clock = clock
        self._policy = policy

    async def check(self, account: str, address: str) -> None:
        """Raise `AccountLockedError` when a lock applies to this attempt."""
        acct, addr = _tag(account.lower()), _tag(address)
        for key in (f"lock:pair:{acct}:{addr}", f"lock:addr:{addr}"):
            await self._refuse_if_locked(key)
        if not await self._marks.get(f"trust:{acct}:{addr}"):
            await self._refuse_if_locked(f"lock:acct:{acct}")

    async def failed(self, account: str, address: str) -> None:
        acct, addr = _tag(account.lower()), _tag(address)
        policy = self._policy
        for name, limit in (
            (f"pair:{acct}:{addr}", policy.per_pair),
            (f"acct:{acct}", policy.per_account),
            (f"addr:{addr}", policy.per_address),
        ):
            usage = await self._counters.hit(f"login:{name}", limit=limit, window_s=policy.window_s)
            # The limit-th failure locks: `limit` failures are all a pair, account or address gets.
            if not usage.allowed or usage.remaining == 0:
                until = self._clock.now().timestamp() + policy.lockout_s
                await self._marks.put(f"lock:{name}", str(until), policy.lockout_s)

    async def succeeded(self, account: str, address: str) -> None:
        acct, addr = _tag(account.lower()), _tag(address)
        await self._counters.clear(f"login:pair:{acct}:{addr}")
        await self._marks.put(f"trust:{acct}:{addr}", "1", self._policy.trusted_address_s)

    async def _refuse_if_locked(self, key: str) -> None:
        until = await self._marks.get(key)
        if until is None:
            return
        retry_after = max(1, math.ceil(float(until) - self._clock.now().timestamp()))
        raise AccountLockedError("Too many failed logins; try again later.", retry_after=retry_after)
