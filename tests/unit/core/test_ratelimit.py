"""Rate limiting: an exact per-minute limit per principal, anonymous callers per client address."""

from __future__ import annotations

import pytest

from nexus.backends.counters import MemoryCounterStore
from nexus.core.ratelimit import NoLimit, RateLimiter
from nexus.core.types import ANONYMOUS, Channel, Invocation, Principal, Usage
from nexus.errors import RateLimitedError

ALICE = Principal(id="key:alice0000000", kind="api_key")
BOB = Principal(id="key:bob000000000", kind="api_key")


def call(
    principal: Principal = ALICE, client_addr: str = "10.0.0.1", channel: Channel = Channel.API
) -> Invocation:
    return Invocation(
        request_id="r",
        channel=channel,
        workflow="add",
        inputs={},
        client_addr=client_addr,
        principal=principal,
    )


class FixedUsageStore:
    """A `CounterStore` whose every hit answers `usage`: to pin the arithmetic on `reset_after_s`."""

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self.keys: list[str] = []

    async def hit(self, key: str, *, limit: int, window_s: int, cost: int = 1) -> Usage:
        self.keys.append(key)
        return self.usage

    async def clear(self, key: str) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture
def store() -> MemoryCounterStore:
    return MemoryCounterStore()


async def test_exactly_the_limit_passes_and_the_next_call_is_refused(store: MemoryCounterStore) -> None:
    limiter = RateLimiter(store, per_minute=5)
    for _ in range(5):
        await limiter.check(call())
    with pytest.raises(RateLimitedError):
        await limiter.check(call())


async def test_one_principal_is_counted_once_across_every_channel(store: MemoryCounterStore) -> None:
    limiter = RateLimiter(store, per_minute=3)
    for channel in Channel:
        await limiter.check(call(channel=channel))
    with pytest.raises(RateLimitedError):
        await limiter.check(call(channel=Channel.API))


async def test_each_principal_has_its_own_count(store: MemoryCounterStore) -> None:
    limiter = RateLimiter(store, per_minute=2)
    await limiter.check(call(ALICE))
    await limiter.check(call(ALICE))
    with pytest.raises(RateLimitedError):
        await limiter.check(call(ALICE))
    await limiter.check(call(BOB))
    await limiter.check(call(BOB))


async def test_a_principal_is_counted_once_whatever_address_it_calls_from(store: MemoryCounterStore) -> None:
    limiter = RateLimiter(store, per_minute=2)
    await limiter.check(call(ALICE, "10.0.0.1"))
    await limiter.check(call(ALICE, "10.0.0.2"))
    with pytest.raises(RateLimitedError):
        await limiter.check(call(ALICE, "10.0.0.3"))


async def test_anonymous_callers_are_counted_per_client_address(store: MemoryCounterStore) -> None:
    limiter = RateLimiter(store, per_minute=1)
    await limiter.check(call(ANONYMOUS, "10.0.0.1"))
    with pytest.raises(RateLimitedError):
        await limiter.check(call(ANONYMOUS, "10.0.0.1"))
    await limiter.check(call(ANONYMOUS, "10.0.0.2"))


async def test_refusal_says_to_retry_when_the_oldest_call_leaves_the_minute(
    store: MemoryCounterStore,
) -> None:
    limiter = RateLimiter(store, per_minute=1)
    await limiter.check(call())
    with pytest.raises(RateLimitedError) as refused:
        await limiter.check(call())
    assert 59 <= refused.value.retry_after <= 60
    assert refused.value.to_problem()["retry_after"] == refused.value.retry_after
    assert f"retry in {refused.value.retry_after} s" in refused.value.message


@pytest.mark.parametrize(
    ("reset_after_s", "retry_after"), [(0.0, 1), (0.2, 1), (1.0, 1), (1.01, 2), (7.5, 8), (60.0, 60)]
)
async def test_retry_after_is_reset_after_rounded_up_and_never_below_one_second(
    reset_after_s: float, retry_after: int
) -> None:
    usage = Usage(allowed=False, limit=1, remaining=0, reset_after_s=reset_after_s)
    limiter = RateLimiter(FixedUsageStore(usage), per_minute=1)
    with pytest.raises(RateLimitedError) as refused:
        await limiter.check(call())
    assert refused.value.retry_after == retry_after


async def test_allowed_usage_is_not_refused_even_with_nothing_remaining() -> None:
    store = FixedUsageStore(Usage(allowed=True, limit=1, remaining=0, reset_after_s=30.0))
    await RateLimiter(store, per_minute=1).check(call())
    assert store.keys == [f"rate:{ALICE.id}"]


async def test_refusal_message_names_the_configured_limit(store: MemoryCounterStore) -> None:
    limiter = RateLimiter(store, per_minute=2)
    await limiter.check(call())
    await limiter.check(call())
    with pytest.raises(RateLimitedError, match="Rate limit of 2 requests per minute exceeded"):
        await limiter.check(call())


async def test_no_limit_admits_more_calls_than_any_window_would() -> None:
    limiter = NoLimit()
    for _ in range(200):
        await limiter.check(call())  # raises if it ever refuses
