"""Login throttling: tries counted per (account, address), failures per account and per address.

Each try at a password or a second factor is counted for its (account, address) pair before it is
checked, so concurrent guesses cannot outrun the limit. A limit crossed sets a lock marker that
expires by itself. The per-account lock does not apply to addresses from which that account logged
in successfully before, so a distributed attacker can only delay the real user on a new device,
never lock them out for good.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

from nexus.core.auth.model import username_key
from nexus.core.auth.policy import ThrottlePolicy
from nexus.core.auth.ports import EphemeralStore
from nexus.core.ports import Clock, CounterStore
from nexus.errors import AccountLockedError, NexusError

_log = logging.getLogger("nexus.auth")
# Password tries and second-factor tries have a counter each (a right password followed by a
# wrong code is one of each); both lock the same pair.
_PAIR_COUNTERS = ("pair", "code")


def _tag(value: str) -> str:
    # Keys carry no raw usernames or addresses (they end up in Redis and its logs).
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _account_tag(account: str) -> str:
    """One tag for every spelling a directory takes for the same account: the `username_key`
    form with surrounding blanks dropped and inner runs of them made one (LDAP's space handling)."""
    return _tag(" ".join(username_key(account).split()))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One counted try of an (account, address) pair; hand it to `failed` when the try fails."""

    account: str
    address: str
    last: bool
    """It was the pair's last allowed try: failing it locks the pair."""


class LoginThrottle:
    """Counts login tries and failures, and refuses the tries a lock covers."""

    def __init__(self, counters: CounterStore, marks: EphemeralStore, clock: Clock, policy: ThrottlePolicy):
        self._counters = counters
        self._marks = marks
        self._clock = clock
        self._policy = policy

    async def attempt(self, account: str, address: str, *, second_factor: bool = False) -> Attempt:
        """Count a try before checking it; raise `AccountLockedError` when a lock applies or the
        pair has used up its tries (the try is then refused unchecked, and the pair locked)."""
        acct, addr = _account_tag(account), _tag(address)
        await self._refuse_if_locked(f"lock:pair:{acct}:{addr}")
        await self._refuse_if_locked(f"lock:addr:{addr}")
        if not await self._marks.get(f"trust:{acct}:{addr}"):
            await self._refuse_if_locked(f"lock:acct:{acct}")
        counter = _PAIR_COUNTERS[1] if second_factor else _PAIR_COUNTERS[0]
        policy = self._policy
        usage = await self._counters.hit(
            f"login:{counter}:{acct}:{addr}", limit=policy.per_pair, window_s=policy.window_s
        )
        if not usage.allowed:
            await self._lock_pair(acct, addr)
        # Checked again after counting: a lock set (and the counters reset) by a concurrent try
        # since the first check refuses this one too.
        await self._refuse_if_locked(f"lock:pair:{acct}:{addr}")
        return Attempt(acct, addr, last=usage.remaining == 0)

    async def failed(self, attempt: Attempt) -> None:
        """Count a failed try against its account and its address; lock what reached its limit."""
        policy = self._policy
        for name, limit in (
            (f"acct:{attempt.account}", policy.per_account),
            (f"addr:{attempt.address}", policy.per_address),
        ):
            usage = await self._counters.hit(f"login:{name}", limit=limit, window_s=policy.window_s)
            # The limit-th failure locks: `limit` failures are all an account or address gets.
            if not usage.allowed or usage.remaining == 0:
                await self._marks.put(f"lock:{name}", self._lock_until(), policy.lockout_s)
        if attempt.last:
            await self._lock_pair(attempt.account, attempt.address)

    async def succeeded(self, account: str, address: str) -> None:
        """A finished login: the pair starts over and the address is trusted for the account."""
        acct, addr = _account_tag(account), _tag(address)
        for counter in _PAIR_COUNTERS:
            await self._counters.clear(f"login:{counter}:{acct}:{addr}")
        try:
            await self._marks.put(f"trust:{acct}:{addr}", "1", self._policy.trusted_address_s)
        except NexusError as exc:
            # Trust only spares the address a future account lock; the login itself stands.
            _log.warning("could not record a trusted login address: %s", exc.message)

    async def _lock_pair(self, acct: str, addr: str) -> None:
        # The pair's tries start over once the lock expires, so a lock lasts `lockout_s`, not
        # until the counting window has moved on.
        await self._marks.put(f"lock:pair:{acct}:{addr}", self._lock_until(), self._policy.lockout_s)
        for counter in _PAIR_COUNTERS:
            await self._counters.clear(f"login:{counter}:{acct}:{addr}")

    def _lock_until(self) -> str:
        return str(self._clock.now().timestamp() + self._policy.lockout_s)

    async def _refuse_if_locked(self, key: str) -> None:
        until = await self._marks.get(key)
        if until is None:
            return
        retry_after = max(1, math.ceil(float(until) - self._clock.now().timestamp()))
        raise AccountLockedError("Too many failed logins; try again later.", retry_after=retry_after)
