"""The `EphemeralStore` contract, run against memory and the real Redis on 127.0.0.1:6379.

Expiry runs on the wall clock (Redis expires keys on its own), so those tests use short lifetimes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from tests.contract.conftest import delete_keys

from nexus.backends.ephemeral import MemoryEphemeralStore
from nexus.backends.redis_ephemeral import RedisEphemeralStore
from nexus.core.auth.ports import EphemeralStore
from nexus.errors import DependencyUnavailableError

SHORT_S = 0.2
RACERS = 8

OpenStore = Callable[[], EphemeralStore]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def open_store(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[OpenStore]:
    """Open stores of one backend. Redis stores opened by one test share values, like two nodes;
    memory stores are one process, so every call returns the same store."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    memory = MemoryEphemeralStore()
    opened: list[EphemeralStore] = []

    def open_one() -> EphemeralStore:
        if url is None:
            return memory
        store = RedisEphemeralStore(url, key_prefix=key_prefix)
        opened.append(store)
        return store

    yield open_one
    await memory.close()
    for store in opened:
        await store.close()
    if url is not None:
        await delete_keys(url, key_prefix)


@pytest.fixture
def store(open_store: OpenStore) -> EphemeralStore:
    return open_store()


async def test_a_value_put_is_read_back_until_it_expires(store: EphemeralStore) -> None:
    await store.put("state:abc", '{"verifier": "v"}', ttl_s=SHORT_S)

    assert await store.get("state:abc") == '{"verifier": "v"}'
    assert await store.get("state:abc") == '{"verifier": "v"}'
    await asyncio.sleep(SHORT_S + 0.1)
    assert await store.get("state:abc") is None


async def test_get_of_an_unknown_key_returns_none(store: EphemeralStore) -> None:
    await store.put("a", "1", ttl_s=60)

    assert await store.get("b") is None
    assert await store.take("b") is None


async def test_put_replaces_the_value_and_its_lifetime(store: EphemeralStore) -> None:
    await store.put("k", "old", ttl_s=SHORT_S)
    await store.put("k", "new", ttl_s=60)

    await asyncio.sleep(SHORT_S + 0.1)

    assert await store.get("k") == "new"


async def test_take_returns_the_value_once(store: EphemeralStore) -> None:
    await store.put("challenge", "c-1", ttl_s=60)

    assert await store.take("challenge") == "c-1"
    assert await store.take("challenge") is None
    assert await store.get("challenge") is None


async def test_take_of_an_expired_value_returns_none(store: EphemeralStore) -> None:
    await store.put("challenge", "c-1", ttl_s=SHORT_S)

    await asyncio.sleep(SHORT_S + 0.1)

    assert await store.take("challenge") is None


async def test_concurrent_takes_of_one_value_give_it_to_exactly_one_taker(open_store: OpenStore) -> None:
    nodes = [open_store() for _ in range(RACERS)]
    await nodes[0].put("challenge", "c-1", ttl_s=60)

    taken = await asyncio.gather(*(node.take("challenge") for node in nodes))

    assert [value for value in taken if value is not None] == ["c-1"]
    assert taken.count(None) == RACERS - 1


async def test_claim_succeeds_once_then_reports_the_replay(store: EphemeralStore) -> None:
    assert await store.claim("assertion:id-1", ttl_s=60) is True
    assert await store.claim("assertion:id-1", ttl_s=60) is False
    assert await store.claim("assertion:id-2", ttl_s=60) is True


async def test_concurrent_claims_of_one_key_let_exactly_one_win(open_store: OpenStore) -> None:
    nodes = [open_store() for _ in range(RACERS)]

    claimed = await asyncio.gather(*(node.claim("jti:1", ttl_s=60) for node in nodes))

    assert sorted(claimed) == [False] * (RACERS - 1) + [True]


async def test_a_claim_can_be_made_again_after_it_expires(store: EphemeralStore) -> None:
    assert await store.claim("code:123", ttl_s=SHORT_S) is True

    await asyncio.sleep(SHORT_S + 0.1)

    assert await store.claim("code:123", ttl_s=60) is True
    assert await store.claim("code:123", ttl_s=60) is False


async def test_a_key_holding_a_value_cannot_be_claimed(store: EphemeralStore) -> None:
    await store.put("k", "value", ttl_s=60)

    assert await store.claim("k", ttl_s=60) is False
    assert await store.get("k") == "value"


async def test_a_value_put_on_one_node_is_taken_on_another(open_store: OpenStore) -> None:
    begin_node, callback_node = open_store(), open_store()
    await begin_node.put("sso:state-1", "return-to", ttl_s=60)

    assert await callback_node.take("sso:state-1") == "return-to"
    assert await begin_node.get("sso:state-1") is None


@pytest.mark.parametrize("ttl_s", [0, -1])
async def test_a_lifetime_that_is_not_positive_is_rejected(store: EphemeralStore, ttl_s: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        await store.put("k", "v", ttl_s=ttl_s)
    with pytest.raises(ValueError, match="positive"):
        await store.claim("k", ttl_s=ttl_s)

    assert await store.get("k") is None


async def test_a_full_memory_store_refuses_new_keys_rather_than_evicting_markers() -> None:
    now = [0.0]
    store = MemoryEphemeralStore(monotonic=lambda: now[0], max_entries=2)
    assert await store.claim("a", ttl_s=10)
    assert await store.claim("b", ttl_s=10)

    with pytest.raises(DependencyUnavailableError):
        await store.claim("c", ttl_s=10)
    assert await store.claim("a", ttl_s=10) is False

    now[0] = 11.0
    assert await store.claim("c", ttl_s=10) is True


async def test_an_unreachable_redis_is_unavailable_and_the_error_hides_the_password() -> None:
    # Port 1 on loopback refuses at once; no server is needed to show the failure path.
    store = RedisEphemeralStore("redis://:s3cret-pw@127.0.0.1:1/0", timeout_s=0.5)
    try:
        with pytest.raises(DependencyUnavailableError) as caught:
            await store.take("k")
    finally:
        await store.close()

    assert "s3cret-pw" not in caught.value.message
    assert "s3cret-pw" not in str(caught.value)
