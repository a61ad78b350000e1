"""The `CounterStore` contract, run against memory and the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio
import redis.exceptions
from tests.contract.conftest import delete_keys

from nexus.backends.counters import MemoryCounterStore, open_counter_store
from nexus.backends.redis_counters import RedisCounterStore
from nexus.core.ports import CounterStore
from nexus.errors import ConfigurationError, DependencyUnavailableError

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"

OpenStore = Callable[[], CounterStore]


def _redis_is_listening() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    """The real Redis; skipped when absent, except under CI=true where its absence is a failure."""
    if not _redis_is_listening():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis must run on {REDIS_HOST}:{REDIS_PORT} when CI=true", pytrace=False)
        pytest.skip(f"no Redis on {REDIS_HOST}:{REDIS_PORT}")
    return REDIS_URL


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def open_store(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[OpenStore]:
    """Open stores of one backend; Redis stores opened by one test share counters, like two nodes."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    opened: list[CounterStore] = []

    def open_one() -> CounterStore:
        store: CounterStore = (
            MemoryCounterStore() if url is None else RedisCounterStore(url, key_prefix=key_prefix)
        )
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()
    if url is not None:
        await delete_keys(url, key_prefix)


@pytest.fixture
def store(open_store: OpenStore) -> CounterStore:
    return open_store()


async def test_limit_allows_exactly_limit_hits_then_denies(store: CounterStore) -> None:
    usages = [await store.hit("caller", limit=5, window_s=60) for _ in range(6)]

    assert [usage.allowed for usage in usages] == [True] * 5 + [False]
    assert [usage.remaining for usage in usages] == [4, 3, 2, 1, 0, 0]
    assert all(usage.limit == 5 for usage in usages)


async def test_separate_keys_are_counted_independently(store: CounterStore) -> None:
    for _ in range(3):
        await store.hit("alice", limit=3, window_s=60)

    alice = await store.hit("alice", limit=3, window_s=60)
    bob = await store.hit("bob", limit=3, window_s=60)

    assert not alice.allowed
    assert bob.allowed
    assert bob.remaining == 2


async def test_cost_consumes_that_many_units(store: CounterStore) -> None:
    first = await store.hit("batch", limit=10, window_s=60, cost=4)
    second = await store.hit("batch", limit=10, window_s=60, cost=4)
    too_big = await store.hit("batch", limit=10, window_s=60, cost=4)
    fits = await store.hit("batch", limit=10, window_s=60, cost=2)

    assert (first.allowed, first.remaining) == (True, 6)
    assert (second.allowed, second.remaining) == (True, 2)
    assert (too_big.allowed, too_big.remaining) == (False, 2)
    assert (fits.allowed, fits.remaining) == (True, 0)


async def test_denied_hit_reports_a_positive_reset_within_the_window(store: CounterStore) -> None:
    await store.hit("caller", limit=1, window_s=30)

    denied = await store.hit("caller", limit=1, window_s=30)

    assert not denied.allowed
    assert 0 < denied.reset_after_s <= 30


async def test_cost_above_the_limit_is_denied_with_a_positive_reset(store: CounterStore) -> None:
    denied = await store.hit("caller", limit=3, window_s=20, cost=4)

    assert not denied.allowed
    assert denied.reset_after_s > 0


async def test_non_positive_limit_window_or_cost_is_rejected(store: CounterStore) -> None:
    with pytest.raises(ValueError, match="positive"):
        await store.hit("caller", limit=0, window_s=60)
    with pytest.raises(ValueError, match="positive"):
        await store.hit("caller", limit=1, window_s=0)
    with pytest.raises(ValueError, match="positive"):
        await store.hit("caller", limit=1, window_s=60, cost=0)


async def test_hits_are_allowed_again_once_the_window_has_passed(store: CounterStore) -> None:
    started = time.time()
    await store.hit("caller", limit=2, window_s=1)
    await store.hit("caller", limit=2, window_s=1)
    assert not (await store.hit("caller", limit=2, window_s=1)).allowed

    deadline = started + 5
    while not (await store.hit("caller", limit=2, window_s=1)).allowed:
        assert time.time() < deadline, "the counter never reopened"
        await asyncio.sleep(0.05)
    assert time.time() - started >= 0.95, "the counter reopened before its window passed"
    # A moving window frees its slots one by one: right at reopening the second of the first two
    # hits may still be inside. More than a window after every earlier hit, one hit leaves one slot.
    await asyncio.sleep(max(0.0, started + 2.2 - time.time()))
    assert (await store.hit("caller", limit=2, window_s=1)).remaining == 1


async def test_clear_forgets_the_hits_of_that_key_only(store: CounterStore) -> None:
    for key in ("alice", "bob"):
        await store.hit(key, limit=2, window_s=60)
        await store.hit(key, limit=2, window_s=60)

    await store.clear("alice")

    assert (await store.hit("alice", limit=2, window_s=60)).remaining == 1
    assert not (await store.hit("bob", limit=2, window_s=60)).allowed


async def test_concurrent_hits_allow_exactly_the_limit(store: CounterStore) -> None:
    usages = await asyncio.gather(*(store.hit("burst", limit=20, window_s=60) for _ in range(50)))

    assert sum(usage.allowed for usage in usages) == 20


@pytest.mark.redis
async def test_two_redis_stores_share_the_same_counters(redis_url: str, key_prefix: str) -> None:
    node_a = RedisCounterStore(redis_url, key_prefix=key_prefix)
    node_b = RedisCounterStore(redis_url, key_prefix=key_prefix)
    try:
        for _ in range(3):
            assert (await node_a.hit("shared", limit=5, window_s=60)).allowed
        results = [(await node_b.hit("shared", limit=5, window_s=60)).allowed for _ in range(3)]
        assert results == [True, True, False]

        await node_b.clear("shared")
        assert (await node_a.hit("shared", limit=5, window_s=60)).remaining == 4
    finally:
        await node_a.close()
        await node_b.close()
        await delete_keys(redis_url, key_prefix)


@pytest.mark.redis
async def test_concurrent_hits_from_two_redis_stores_allow_exactly_the_limit(
    redis_url: str, key_prefix: str
) -> None:
    nodes = [RedisCounterStore(redis_url, key_prefix=key_prefix) for _ in range(2)]
    try:
        usages = await asyncio.gather(*(nodes[i % 2].hit("burst", limit=20, window_s=60) for i in range(50)))
        assert sum(usage.allowed for usage in usages) == 20
    finally:
        for node in nodes:
            await node.close()
        await delete_keys(redis_url, key_prefix)


async def _connections_named(client: redis.asyncio.Redis, name: str) -> int:
    clients = await client.client_list()
    return sum(entry.get("name") == name for entry in clients)


@pytest.mark.redis
async def test_closing_a_redis_store_releases_its_connections(redis_url: str, key_prefix: str) -> None:
    name = key_prefix.rstrip(":")
    store = RedisCounterStore(f"{redis_url}?client_name={name}", key_prefix=key_prefix)
    observer = redis.asyncio.Redis.from_url(redis_url)
    try:
        await asyncio.gather(*(store.hit("k", limit=100, window_s=60) for _ in range(5)))
        assert await _connections_named(observer, name) >= 1

        await store.close()

        deadline = time.monotonic() + 5
        while await _connections_named(observer, name):
            assert time.monotonic() < deadline, "connections stayed open after close()"
            await asyncio.sleep(0.05)
    finally:
        await observer.aclose()
        await delete_keys(redis_url, key_prefix)


async def test_unreachable_redis_raises_dependency_unavailable_without_credentials() -> None:
    # Port 1 on loopback refuses at once; nothing listens there.
    store = RedisCounterStore("redis://nexus:s3cret-pw@127.0.0.1:1/0", timeout_s=1)
    try:
        with pytest.raises(DependencyUnavailableError) as caught:
            await store.hit("caller", limit=1, window_s=60)
        with pytest.raises(DependencyUnavailableError):
            await store.ping()
    finally:
        await store.close()

    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1:1" in caught.value.message
    assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)


@pytest.mark.redis
async def test_ping_succeeds_against_a_running_redis(redis_url: str) -> None:
    store = RedisCounterStore(redis_url)
    try:
        await store.ping()
    finally:
        await store.close()


async def test_open_counter_store_picks_the_backend_from_the_url() -> None:
    memory = open_counter_store(None)
    on_redis = open_counter_store("rediss://user:pw@cache.internal:6380/2")
    try:
        assert isinstance(memory, MemoryCounterStore)
        assert isinstance(on_redis, RedisCounterStore)
    finally:
        await memory.close()
        await on_redis.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis://h:notaport/0"])
def test_open_counter_store_rejects_urls_that_are_not_redis(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_counter_store(url)
