"""`ClusterRegistry` in process memory: the nodes of a cluster that lives in one process (tests).

`nexus.backends.redis_cluster.RedisClusterRegistry` is the one nodes share. Imports only core.
"""

from __future__ import annotations

from dataclasses import replace

from nexus.core.cluster import ClusterNode
from nexus.core.ports import Clock
from nexus.core.telemetry import SystemClock


class MemoryClusterRegistry:
    """Nodes in this process; lifetimes run on the clock's monotonic time."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._nodes: dict[str, tuple[ClusterNode, float]] = {}

    async def announce(self, node: ClusterNode, ttl_s: float) -> None:
        """Add or refresh `node`, live for `ttl_s` seconds from now."""
        self._prune()
        seen = replace(node, last_seen=self._clock.now())
        self._nodes[node.node_id] = (seen, self._clock.monotonic() + ttl_s)

    async def withdraw(self, node_id: str) -> None:
        """Remove a node at once."""
        self._nodes.pop(node_id, None)

    async def live(self) -> list[ClusterNode]:
        """The nodes whose lifetime has not lapsed, by node id."""
        self._prune()
        return [self._nodes[node_id][0] for node_id in sorted(self._nodes)]

    async def ping(self) -> None:
        """Process memory always answers."""
        return None

    async def close(self) -> None:
        self._nodes.clear()

    def _prune(self) -> None:
        now = self._clock.monotonic()
        for node_id in [node_id for node_id, (_, expiry) in self._nodes.items() if expiry <= now]:
            del self._nodes[node_id]
