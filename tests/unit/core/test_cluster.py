"""Cluster membership on the memory registry and a fake clock: join, lapse, leave, the view."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

import pytest

from nexus.backends.cluster_registry import MemoryClusterRegistry
from nexus.core.cluster import TTL_INTERVALS, ClusterMembership, ClusterNode, new_node_id
from nexus.core.health import Readiness
from nexus.errors import DependencyUnavailableError
from nexus.testing.clock import FakeClock

INTERVAL_S = 0.5


class State:
    def __init__(self) -> None:
        self.answers = True

    async def ping(self) -> None:
        if not self.answers:
            raise DependencyUnavailableError("The state store is unavailable.")


def _member(registry: MemoryClusterRegistry, clock: FakeClock, name: str, state: State) -> ClusterMembership:
    node = ClusterNode(
        node_id=name,
        api=f"127.0.0.1:{8000 + len(name)}",
        mcp="127.0.0.1:3000",
        version="0.1.0",
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        ready=False,
    )
    return ClusterMembership(registry, node, Readiness({"state": state.ping}, clock, interval_s=INTERVAL_S))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_joined_nodes_see_each_other_with_their_readiness_and_last_heartbeat(clock: FakeClock) -> None:
    registry, healthy, broken = MemoryClusterRegistry(clock), State(), State()
    broken.answers = False
    first = _member(registry, clock, "node-a", healthy)
    second = _member(registry, clock, "node-b", broken)
    await first.join()
    await second.join()

    view = await second.view()

    assert view.node_id == "node-b"
    assert view.nodes is not None
    assert [(n.node_id, n.ready, n.last_seen) for n in view.nodes] == [
        ("node-a", True, clock.now()),
        ("node-b", False, clock.now()),
    ]


async def test_a_node_lives_three_intervals_after_its_last_heartbeat(clock: FakeClock) -> None:
    registry = MemoryClusterRegistry(clock)
    survivor, crashed = (
        _member(registry, clock, "node-a", State()),
        _member(registry, clock, "node-b", State()),
    )
    await crashed.join()
    assert crashed.ttl_s == TTL_INTERVALS * INTERVAL_S

    clock.advance(TTL_INTERVALS * INTERVAL_S - 0.01)
    await survivor.join()
    view = await survivor.view()
    assert view.nodes is not None
    assert [n.node_id for n in view.nodes] == ["node-a", "node-b"]

    clock.advance(0.01)
    view = await survivor.view()
    assert view.nodes is not None
    assert [n.node_id for n in view.nodes] == ["node-a"]


async def test_a_node_that_leaves_is_gone_at_once(clock: FakeClock) -> None:
    registry = MemoryClusterRegistry(clock)
    staying, leaving = (
        _member(registry, clock, "node-a", State()),
        _member(registry, clock, "node-b", State()),
    )
    await staying.join()
    await leaving.join()

    await leaving.leave()

    view = await staying.view()
    assert view.nodes is not None
    assert [n.node_id for n in view.nodes] == ["node-a"]


def test_a_node_id_names_host_and_process_and_is_unique() -> None:
    ids = {new_node_id(socket.gethostname(), os.getpid()) for _ in range(100)}

    assert len(ids) == 100
    assert all(i.startswith(f"{socket.gethostname()[:64]}-{os.getpid()}-") for i in ids)
