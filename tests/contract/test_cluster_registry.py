"""The `ClusterRegistry` contract, run against memory and the real Redis on 127.0.0.1:6379.

Memory lifetimes run on a fake clock; Redis expires nodes on its own clock, so there the tests
wait out short real lifetimes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from tests.contract.conftest import delete_keys

from nexus.backends.cluster_registry import MemoryClusterRegistry
from nexus.backends.redis_cluster import RedisClusterRegistry
from nexus.core.cluster import ClusterMembership, ClusterNode, ClusterRegistry
from nexus.core.health import Readiness
from nexus.errors import DependencyUnavailableError
from nexus.testing.clock import FakeClock

SHORT_S = 0.5
"""A lifetime the tests wait out."""
MARGIN_S = 0.15
LONG_S = 60.0


@dataclass
class Registries:
    """Registries of one backend that share their nodes (two Redis registries act as two nodes)."""

    open: Callable[[], ClusterRegistry]
    pass_time: Callable[[float], Awaitable[None]]
    clock: FakeClock


def _node(node_id: str, *, ready: bool = True) -> ClusterNode:
    return ClusterNode(
        node_id=node_id,
        api="127.0.0.1:8000",
        mcp="127.0.0.1:3000",
        version="0.1.0",
        started_at=datetime(2025, 1, 1, 12, 0, tzinfo=UTC),
        ready=ready,
    )


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def registries(request: pytest.FixtureRequest) -> AsyncIterator[Registries]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    clock = FakeClock()
    memory = MemoryClusterRegistry(clock)
    cluster = f"nexus-test-{uuid.uuid4().hex}"
    opened: list[RedisClusterRegistry] = []

    def open_one() -> ClusterRegistry:
        if url is None:
            return memory  # one process: every node is the same registry
        registry = RedisClusterRegistry(url, cluster=cluster)
        opened.append(registry)
        return registry

    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    yield Registries(open_one, advance if url is None else asyncio.sleep, clock)
    await memory.close()
    for registry in opened:
        await registry.close()
    if url is not None:
        await delete_keys(url, f"nexus:cluster:{cluster}:")


async def test_an_announced_node_is_listed_by_every_registry_as_it_announced_itself(
    registries: Registries,
) -> None:
    first, second = registries.open(), registries.open()
    before = datetime.now(UTC) if isinstance(first, RedisClusterRegistry) else registries.clock.now()
    await first.announce(_node("node-a", ready=False), LONG_S)

    [listed] = await second.live()

    assert replace(listed, last_seen=None) == _node("node-a", ready=False)
    assert listed.last_seen is not None
    assert before - timedelta(seconds=1) <= listed.last_seen <= before + timedelta(seconds=1)


async def test_nodes_are_listed_by_id_and_an_announcement_again_replaces_the_first(
    registries: Registries,
) -> None:
    first, second = registries.open(), registries.open()
    await second.announce(_node("node-b"), LONG_S)
    await first.announce(_node("node-a", ready=False), LONG_S)
    await first.announce(_node("node-a", ready=True), LONG_S)

    listed = await second.live()

    assert [(node.node_id, node.ready) for node in listed] == [("node-a", True), ("node-b", True)]


async def test_a_withdrawn_node_is_gone_at_once_for_every_registry(registries: Registries) -> None:
    first, second = registries.open(), registries.open()
    await first.announce(_node("node-a"), LONG_S)
    await second.announce(_node("node-b"), LONG_S)

    await first.withdraw("node-a")
    await first.withdraw("never-announced")

    assert [node.node_id for node in await second.live()] == ["node-b"]


async def test_a_node_that_stops_announcing_drops_out_when_its_lifetime_lapses(
    registries: Registries,
) -> None:
    first, second = registries.open(), registries.open()
    await first.announce(_node("node-a"), SHORT_S)
    await second.announce(_node("node-b"), LONG_S)

    await registries.pass_time(SHORT_S - MARGIN_S)
    assert [node.node_id for node in await second.live()] == ["node-a", "node-b"]
    await registries.pass_time(2 * MARGIN_S)
    assert [node.node_id for node in await second.live()] == ["node-b"]


async def test_announcing_again_extends_the_lifetime(registries: Registries) -> None:
    registry = registries.open()
    await registry.announce(_node("node-a"), SHORT_S)
    await registries.pass_time(SHORT_S - MARGIN_S)
    await registry.announce(_node("node-a"), SHORT_S)
    await registries.pass_time(2 * MARGIN_S)

    assert [node.node_id for node in await registry.live()] == ["node-a"]


async def test_a_lapsed_node_announcing_again_is_listed_again(registries: Registries) -> None:
    registry = registries.open()
    await registry.announce(_node("node-a"), SHORT_S)
    await registries.pass_time(SHORT_S + MARGIN_S)
    assert await registry.live() == []

    await registry.announce(_node("node-a"), LONG_S)

    assert [node.node_id for node in await registry.live()] == ["node-a"]


@pytest.mark.redis
async def test_nodes_of_another_cluster_on_the_same_redis_are_not_listed(redis_url: str) -> None:
    ours, theirs = f"nexus-test-{uuid.uuid4().hex}", f"nexus-test-{uuid.uuid4().hex}"
    mine, other = (
        RedisClusterRegistry(redis_url, cluster=ours),
        RedisClusterRegistry(redis_url, cluster=theirs),
    )
    try:
        await mine.announce(_node("node-a"), LONG_S)
        await other.announce(_node("node-b"), LONG_S)

        assert [node.node_id for node in await mine.live()] == ["node-a"]
        assert [node.node_id for node in await other.live()] == ["node-b"]
    finally:
        await mine.close()
        await other.close()
        for name in (ours, theirs):
            await delete_keys(redis_url, f"nexus:cluster:{name}:")


@pytest.mark.redis
async def test_the_redis_keys_expire_a_second_after_the_longest_lived_node(redis_url: str) -> None:
    import redis.asyncio

    cluster = f"nexus-test-{uuid.uuid4().hex}"
    registry = RedisClusterRegistry(redis_url, cluster=cluster)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await registry.announce(_node("node-a"), SHORT_S)
        keys = [key async for key in client.scan_iter(match=f"nexus:cluster:{cluster}:*")]
        assert len(keys) == 2
        lifetimes = [await client.pttl(key) for key in keys]
        assert all(0 < ms <= SHORT_S * 1000 + 1000 for ms in lifetimes), lifetimes
    finally:
        await client.aclose()
        await registry.close()
        await delete_keys(redis_url, f"nexus:cluster:{cluster}:")


async def test_an_unreachable_redis_is_a_dependency_error_that_names_no_credentials() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    registry = RedisClusterRegistry("redis://admin:s3cret@127.0.0.1:9/0", cluster="c", timeout_s=0.5)
    try:
        for attempt in (
            registry.announce(_node("node-a"), LONG_S),
            registry.live(),
            registry.withdraw("node-a"),
            registry.ping(),
        ):
            with pytest.raises(DependencyUnavailableError) as raised:
                await attempt
            assert "s3cret" not in str(raised.value)
            assert "127.0.0.1:9" in str(raised.value)
    finally:
        await registry.close()


async def test_the_view_says_unknown_rather_than_empty_when_the_registry_does_not_answer() -> None:
    clock = FakeClock()
    registry = RedisClusterRegistry("redis://127.0.0.1:9/0", cluster="c", timeout_s=0.5)
    node = ClusterNode("node-a", "127.0.0.1:1", "127.0.0.1:2", "0.1.0", clock.now(), ready=True)
    member = ClusterMembership(registry, node, Readiness({}, clock, interval_s=1.0))
    try:
        view = await member.view()
        await member.leave()  # logged, never raised: the node then lapses on its own
    finally:
        await registry.close()

    assert (view.node_id, view.nodes) == ("node-a", None)
