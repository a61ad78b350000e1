"""The `LeaseGauge` contract, run against memory and the real Redis on 127.0.0.1:6379.

Memory leases expire on a fake clock; Redis expires them on its own clock, so there the tests wait
out short real lifetimes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio
import redis.exceptions
from tests.contract.conftest import delete_keys

from nexus.backends.lease_gauge import MemoryLeaseGauge
from nexus.backends.redis_lease_gauge import RedisLeaseGauge
from nexus.core.tenancy.ports import LeaseGauge
from nexus.errors import ConfigurationError, DependencyUnavailableError
from nexus.testing.clock import FakeClock

SHORT_S = 0.2
"""A lifetime the tests wait out."""
MARGIN_S = 0.15
"""Waited beyond a lifetime before it counts as over (and kept from its end before it may not be)."""
LONG_S = 60.0
RACERS = 50


@dataclass
class Nodes:
    """Gauges of one backend that share their leases (two Redis gauges act as two nodes), and the
    way time passes for them."""

    open: Callable[[], LeaseGauge]
    pass_time: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def nodes(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[Nodes]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    clock = FakeClock()
    memory = MemoryLeaseGauge(clock)
    opened: list[RedisLeaseGauge] = []

    def open_one() -> LeaseGauge:
        if url is None:
            return memory  # one process: every node is the same gauge
        gauge = RedisLeaseGauge(url, key_prefix=key_prefix)
        opened.append(gauge)
        return gauge

    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    yield Nodes(open_one, advance if url is None else asyncio.sleep)
    await memory.close()
    for gauge in opened:
        await gauge.close()
    if url is not None:
        await delete_keys(url, key_prefix)


@pytest.fixture
def gauge(nodes: Nodes) -> LeaseGauge:
    return nodes.open()


async def test_acquire_counts_leases_up_to_the_limit_then_refuses(gauge: LeaseGauge) -> None:
    taken = [await gauge.acquire("tenant-a", f"run-{i}", limit=3, ttl_s=LONG_S) for i in range(4)]

    assert taken == [1, 2, 3, None]
    assert await gauge.count("tenant-a") == 3


async def test_a_refused_acquire_takes_nothing(gauge: LeaseGauge) -> None:
    await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=LONG_S)

    assert await gauge.acquire("tenant-a", "run-2", limit=1, ttl_s=LONG_S) is None

    assert await gauge.renew("tenant-a", "run-2", ttl_s=LONG_S) is False
    await gauge.release("tenant-a", "run-1")
    assert await gauge.count("tenant-a") == 0


async def test_releasing_a_lease_frees_its_slot(gauge: LeaseGauge) -> None:
    await gauge.acquire("tenant-a", "run-1", limit=2, ttl_s=LONG_S)
    await gauge.acquire("tenant-a", "run-2", limit=2, ttl_s=LONG_S)

    await gauge.release("tenant-a", "run-1")

    assert await gauge.count("tenant-a") == 1
    assert await gauge.acquire("tenant-a", "run-3", limit=2, ttl_s=LONG_S) == 2
    assert await gauge.acquire("tenant-a", "run-4", limit=2, ttl_s=LONG_S) is None


async def test_releasing_a_lease_that_is_gone_is_harmless(gauge: LeaseGauge) -> None:
    await gauge.acquire("tenant-a", "run-1", limit=2, ttl_s=LONG_S)

    await gauge.release("tenant-a", "never-taken")
    await gauge.release("no-such-key", "run-1")
    await gauge.release("tenant-a", "run-1")
    await gauge.release("tenant-a", "run-1")

    assert await gauge.count("tenant-a") == 0


async def test_an_expired_lease_frees_its_slot(nodes: Nodes) -> None:
    gauge = nodes.open()
    assert await gauge.acquire("tenant-a", "dead-node-run", limit=1, ttl_s=SHORT_S) == 1
    assert await gauge.acquire("tenant-a", "run-2", limit=1, ttl_s=LONG_S) is None

    await nodes.pass_time(SHORT_S + MARGIN_S)

    assert await gauge.count("tenant-a") == 0
    assert await gauge.acquire("tenant-a", "run-2", limit=1, ttl_s=LONG_S) == 1


async def test_renewing_keeps_a_lease_alive_past_its_first_ttl(nodes: Nodes) -> None:
    gauge = nodes.open()
    ttl_s = SHORT_S + 2 * MARGIN_S
    await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=ttl_s)

    for _ in range(3):  # 3 * (ttl - margin) outlasts the first ttl by far
        await nodes.pass_time(ttl_s - MARGIN_S)
        assert await gauge.renew("tenant-a", "run-1", ttl_s=ttl_s) is True

    assert await gauge.count("tenant-a") == 1
    assert await gauge.acquire("tenant-a", "run-2", limit=1, ttl_s=LONG_S) is None


async def test_renewing_an_expired_lease_fails_and_does_not_revive_it(nodes: Nodes) -> None:
    gauge = nodes.open()
    await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=SHORT_S)

    await nodes.pass_time(SHORT_S + MARGIN_S)

    assert await gauge.renew("tenant-a", "run-1", ttl_s=LONG_S) is False
    assert await gauge.count("tenant-a") == 0
    assert await gauge.acquire("tenant-a", "run-2", limit=1, ttl_s=LONG_S) == 1


async def test_renewing_a_lease_never_taken_fails_and_takes_nothing(gauge: LeaseGauge) -> None:
    await gauge.acquire("tenant-a", "run-1", limit=5, ttl_s=LONG_S)

    assert await gauge.renew("tenant-a", "run-2", ttl_s=LONG_S) is False
    assert await gauge.renew("no-such-key", "run-1", ttl_s=LONG_S) is False

    assert await gauge.count("tenant-a") == 1
    assert await gauge.count("no-such-key") == 0


async def test_acquiring_a_held_lease_again_counts_it_once_even_at_the_limit(gauge: LeaseGauge) -> None:
    assert await gauge.acquire("tenant-a", "run-1", limit=2, ttl_s=LONG_S) == 1
    assert await gauge.acquire("tenant-a", "run-1", limit=2, ttl_s=LONG_S) == 1
    assert await gauge.acquire("tenant-a", "run-2", limit=2, ttl_s=LONG_S) == 2

    assert await gauge.acquire("tenant-a", "run-1", limit=2, ttl_s=LONG_S) == 2
    assert await gauge.acquire("tenant-a", "run-3", limit=2, ttl_s=LONG_S) is None
    assert await gauge.count("tenant-a") == 2


async def test_acquiring_a_held_lease_again_restarts_its_lifetime(nodes: Nodes) -> None:
    gauge = nodes.open()
    ttl_s = SHORT_S + 2 * MARGIN_S
    await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=ttl_s)

    await nodes.pass_time(ttl_s - MARGIN_S)
    assert await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=ttl_s) == 1
    await nodes.pass_time(ttl_s - MARGIN_S)

    assert await gauge.count("tenant-a") == 1


async def test_keys_are_counted_independently(gauge: LeaseGauge) -> None:
    await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=LONG_S)

    assert await gauge.acquire("tenant-b", "run-1", limit=1, ttl_s=LONG_S) == 1
    assert await gauge.acquire("tenant-a", "run-2", limit=1, ttl_s=LONG_S) is None

    await gauge.release("tenant-b", "run-1")

    assert await gauge.count("tenant-a") == 1
    assert await gauge.count("tenant-b") == 0
    assert await gauge.count("tenant-c") == 0


async def test_a_lease_taken_on_one_node_is_counted_and_released_on_another(nodes: Nodes) -> None:
    node_a, node_b = nodes.open(), nodes.open()
    await node_a.acquire("tenant-a", "run-1", limit=1, ttl_s=LONG_S)

    assert await node_b.acquire("tenant-a", "run-2", limit=1, ttl_s=LONG_S) is None
    assert await node_b.renew("tenant-a", "run-1", ttl_s=LONG_S) is True
    await node_b.release("tenant-a", "run-1")

    assert await node_a.count("tenant-a") == 0


async def test_concurrent_acquires_on_one_key_grant_exactly_the_limit(gauge: LeaseGauge) -> None:
    taken = await asyncio.gather(
        *(gauge.acquire("tenant-a", f"run-{i}", limit=10, ttl_s=LONG_S) for i in range(RACERS))
    )

    assert sorted(count for count in taken if count is not None) == list(range(1, 11))
    assert await gauge.count("tenant-a") == 10


async def test_concurrent_acquires_from_two_nodes_grant_exactly_the_limit(nodes: Nodes) -> None:
    pair = [nodes.open(), nodes.open()]

    taken = await asyncio.gather(
        *(pair[i % 2].acquire("tenant-a", f"run-{i}", limit=10, ttl_s=LONG_S) for i in range(RACERS))
    )

    assert sorted(count for count in taken if count is not None) == list(range(1, 11))
    assert await pair[0].count("tenant-a") == 10


@pytest.mark.parametrize(
    ("limit", "ttl_s"),
    [(0, LONG_S), (-1, LONG_S), (1, 0.0), (1, -1.0), (1, float("nan")), (1, float("inf"))],
)
async def test_a_limit_below_one_or_an_unusable_ttl_is_rejected(
    gauge: LeaseGauge, limit: int, ttl_s: float
) -> None:
    with pytest.raises(ConfigurationError):
        await gauge.acquire("tenant-a", "run-1", limit=limit, ttl_s=ttl_s)

    assert await gauge.count("tenant-a") == 0


@pytest.mark.parametrize("ttl_s", [0.0, -1.0, float("nan")])
async def test_renewing_with_an_unusable_ttl_is_rejected(gauge: LeaseGauge, ttl_s: float) -> None:
    await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=LONG_S)

    with pytest.raises(ConfigurationError):
        await gauge.renew("tenant-a", "run-1", ttl_s=ttl_s)

    assert await gauge.count("tenant-a") == 1


@pytest.mark.redis
async def test_a_redis_key_expires_a_little_after_its_longest_lease(redis_url: str, key_prefix: str) -> None:
    gauge = RedisLeaseGauge(redis_url, key_prefix=key_prefix)
    observer = redis.asyncio.Redis.from_url(redis_url)
    key = f"{key_prefix}tenant-a"
    try:
        await gauge.acquire("tenant-a", "long", limit=5, ttl_s=30)
        await gauge.acquire("tenant-a", "short", limit=5, ttl_s=5)
        assert 29_000 < await observer.pttl(key) <= 32_000

        await gauge.renew("tenant-a", "short", ttl_s=90)
        assert 89_000 < await observer.pttl(key) <= 92_000

        await gauge.release("tenant-a", "short")
        await gauge.release("tenant-a", "long")
        assert await observer.exists(key) == 0
    finally:
        await gauge.close()
        await observer.aclose()
        await delete_keys(redis_url, key_prefix)


@pytest.mark.redis
async def test_redis_lease_expiry_follows_the_server_clock_not_the_nodes(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This node's wall clock runs an hour fast; leases must still expire on Redis' own time.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    gauge = RedisLeaseGauge(redis_url, key_prefix=key_prefix)
    observer = redis.asyncio.Redis.from_url(redis_url)
    try:
        await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=10)
        seconds, micros = await observer.time()
        server_ms = seconds * 1000 + micros // 1000
        expiry_ms = await observer.zscore(f"{key_prefix}tenant-a", "run-1")

        assert expiry_ms is not None
        assert 9_000 < expiry_ms - server_ms <= 10_000
        assert await gauge.count("tenant-a") == 1
    finally:
        await gauge.close()
        await observer.aclose()
        await delete_keys(redis_url, key_prefix)


async def test_an_unreachable_redis_is_unavailable_and_the_error_hides_the_password() -> None:
    # Port 1 on loopback refuses at once; nothing listens there.
    gauge = RedisLeaseGauge("redis://nexus:s3cret-pw@127.0.0.1:1/0", timeout_s=0.5)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=LONG_S),
        lambda: gauge.renew("tenant-a", "run-1", ttl_s=LONG_S),
        lambda: gauge.release("tenant-a", "run-1"),
        lambda: gauge.count("tenant-a"),
        gauge.ping,
    ]
    try:
        errors: list[DependencyUnavailableError] = []
        for call in calls:
            with pytest.raises(DependencyUnavailableError) as caught:
                await call()
            errors.append(caught.value)
    finally:
        await gauge.close()

    for error in errors:
        assert "s3cret-pw" not in str(error)
        assert "127.0.0.1:1" in error.message
        assert isinstance(error.__cause__, redis.exceptions.ConnectionError)


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis://h:notaport/0"])
def test_a_redis_gauge_rejects_urls_that_are_not_redis(url: str) -> None:
    with pytest.raises(ConfigurationError):
        RedisLeaseGauge(url)
