"""Cluster membership: which nodes serve the app now, and this node's place among them.

Each serving node announces itself in a `ClusterRegistry` every health-check interval with a
lifetime of `TTL_INTERVALS` intervals: a clean stop withdraws it at once, a crashed node drops out
when its lifetime lapses. Imports only core.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from nexus.core.health import Readiness
from nexus.errors import NexusError

log = logging.getLogger("nexus.cluster")

TTL_INTERVALS = 3
"""Heartbeats a node may miss before it drops out of the cluster."""


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """One serving node as it announces itself."""

    node_id: str
    api: str
    """Where its REST and CLI channels listen, `host:port`."""
    mcp: str
    """Where its MCP channel listens, `host:port`."""
    version: str
    started_at: datetime
    ready: bool
    """Its last probe of the backends it needs."""
    last_seen: datetime | None = None
    """Its last heartbeat, on the registry's clock (set when read back)."""


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The cluster as one node sees it; `nodes` is None when the registry could not be read."""

    node_id: str
    nodes: tuple[ClusterNode, ...] | None


class ClusterRegistry(Protocol):
    """Where the nodes of a cluster announce themselves (Redis, shared by every node)."""

    async def announce(self, node: ClusterNode, ttl_s: float) -> None:
        """Add or refresh `node`, live for `ttl_s` seconds from now."""
        ...

    async def withdraw(self, node_id: str) -> None:
        """Remove a node at once (it is stopping)."""
        ...

    async def live(self) -> Sequence[ClusterNode]:
        """The nodes whose lifetime has not lapsed, by node id, each with its `last_seen`."""
        ...

    async def ping(self) -> None:
        """Check that the registry answers; for readiness probes."""
        ...

    async def close(self) -> None: ...


def new_node_id(hostname: str, pid: int) -> str:
    """A node id unique in the cluster (random), which names the host and process for humans."""
    return f"{hostname[:64]}-{pid}-{secrets.token_hex(4)}"


class ClusterMembership:
    """This node in its cluster: announced by `join`, kept alive by `keep_alive`, withdrawn by `leave`."""

    def __init__(self, registry: ClusterRegistry, node: ClusterNode, readiness: Readiness) -> None:
        self._registry = registry
        self._node = node
        self._readiness = readiness
        self._failing = False

    @property
    def node_id(self) -> str:
        return self._node.node_id

    @property
    def ttl_s(self) -> float:
        return TTL_INTERVALS * self._readiness.interval_s

    async def join(self) -> None:
        """Announce this node now.

        Raises:
            DependencyUnavailableError: the registry did not answer (a start-up error).
        """
        ready = await self._readiness.is_ready()
        await self._registry.announce(replace(self._node, ready=ready), self.ttl_s)

    async def keep_alive(self) -> None:
        """Announce this node every interval, with its latest readiness; runs until cancelled.

        A registry that does not answer is logged once and tried again at the next interval;
        meanwhile the other nodes see this one drop out when its lifetime lapses.
        """
        while True:
            await asyncio.sleep(self._readiness.interval_s)
            # The last probe as it stands: a heartbeat never waits on a backend that hangs.
            last = self._readiness.last
            node = replace(self._node, ready=last is not None and last.ready)
            try:
                await self._registry.announce(node, self.ttl_s)
            except NexusError as error:
                if not self._failing:
                    log.warning("Cluster heartbeat failed: %s", error.message)
                self._failing = True
                continue
            if self._failing:
                log.info("Cluster heartbeat delivered again.")
            self._failing = False

    async def leave(self) -> None:
        """Withdraw this node; a registry that does not answer lets its lifetime lapse instead."""
        try:
            await self._registry.withdraw(self._node.node_id)
        except NexusError as error:
            log.warning("Could not leave the cluster (the node drops out when it lapses): %s", error.message)

    async def view(self) -> ClusterView:
        """This node's id and the live nodes (None when the registry does not answer)."""
        try:
            nodes: tuple[ClusterNode, ...] | None = tuple(await self._registry.live())
        except NexusError:
            nodes = None
        return ClusterView(self._node.node_id, nodes)
