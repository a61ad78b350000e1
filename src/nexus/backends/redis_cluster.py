"""`ClusterRegistry` in Redis, shared by every node: a sorted set (node id -> expiry) and a hash
(node id -> what the node announced), under a prefix naming the cluster.

Expiry and `last_seen` come from the Redis server's clock, so nodes whose clocks disagree still
agree on who is live. Every operation is one round trip; lapsed nodes are pruned by the scripts
themselves, so no sweeper is needed. Loaded only when clustering is on.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import redis.asyncio
import redis.exceptions

from nexus.backends.redis_url import redis_client, redis_location
from nexus.core.cluster import ClusterNode
from nexus.errors import DependencyUnavailableError

_IDLE_GRACE_MS = 1000
"""How long the keys outlive the longest-lived node before Redis deletes them."""

# Server time in milliseconds (exact as a Lua number), and lapsed nodes dropped from both keys.
_PRUNE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #lapsed > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('HDEL', KEYS[2], unpack(lapsed))
end
"""

# ARGV: node id, lifetime ms, announcement (JSON), grace ms.
_ANNOUNCE = (
    _PRUNE
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local longest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local keep = tonumber(longest[2]) - now + tonumber(ARGV[4])
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return now
"""
)

# Flat reply: node id, expiry ms, announcement, for each live node.
_LIVE = (
    _PRUNE
    + """
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
local reply = {}
for i = 1, #live, 2 do
  local announced = redis.call('HGET', KEYS[2], live[i])
  if announced then
    reply[#reply + 1] = live[i]
    reply[#reply + 1] = live[i + 1]
    reply[#reply + 1] = announced
  end
end
return reply
"""
)


class RedisClusterRegistry:
    """The nodes of one cluster in Redis.

    Args:
        url: a `redis://` or `rediss://` URL (credentials allowed; they never appear in errors).
        cluster: the cluster's name; nodes announcing under another name are another cluster.
        timeout_s: connect and command timeout; a slow Redis fails the call rather than stalling it.

    Raises:
        ConfigurationError: `url` is not a usable Redis URL.
    """

    def __init__(self, url: str, *, cluster: str, timeout_s: float = 2.0) -> None:
        self._location = redis_location(url)
        prefix = f"nexus:cluster:{cluster}:"
        self._keys = [prefix + "expiry", prefix + "nodes"]
        self._client = redis_client(url, timeout_s=timeout_s, decode_responses=True)
        self._announce = self._client.register_script(_ANNOUNCE)
        self._live = self._client.register_script(_LIVE)

    async def announce(self, node: ClusterNode, ttl_s: float) -> None:
        """Add or refresh `node`, live for `ttl_s` seconds from now (on the Redis server's clock).

        Raises:
            DependencyUnavailableError: Redis could not be reached or refused the command.
        """
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        args = (node.node_id, ttl_ms, json.dumps(_announcement(node, ttl_ms)), _IDLE_GRACE_MS)
        await self._do(self._announce(keys=self._keys, args=args))

    async def withdraw(self, node_id: str) -> None:
        """Remove a node at once.

        Raises:
            DependencyUnavailableError: Redis could not be reached or refused the command.
        """
        expiry, nodes = self._keys
        async with self._client.pipeline(transaction=True) as both:
            both.zrem(expiry, node_id)
            both.hdel(nodes, node_id)
            await self._do(both.execute())

    async def live(self) -> list[ClusterNode]:
        """The nodes whose lifetime has not lapsed, by node id.

        Raises:
            DependencyUnavailableError: Redis could not be reached or refused the command.
        """
        reply = await self._do(self._live(keys=self._keys))
        assert isinstance(reply, list)  # noqa: S101  # the script returns a flat array
        nodes = [
            node
            for i in range(0, len(reply), 3)
            if (node := _node(reply[i], float(reply[i + 1]), reply[i + 2])) is not None
        ]
        return sorted(nodes, key=lambda node: node.node_id)

    async def ping(self) -> None:
        """Check that Redis answers; for start-up and readiness checks.

        Raises:
            DependencyUnavailableError: Redis could not be reached.
        """
        await self._do(self._client.ping())

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._client.aclose()

    async def _do(self, command: Any) -> Any:
        try:
            return await command
        except redis.exceptions.RedisError as exc:
            message = f"The cluster registry at {self._location} is unavailable."
            raise DependencyUnavailableError(message) from exc


def _announcement(node: ClusterNode, ttl_ms: int) -> dict[str, Any]:
    return {
        "api": node.api,
        "mcp": node.mcp,
        "version": node.version,
        "started_at": node.started_at.isoformat(),
        "ready": node.ready,
        "ttl_ms": ttl_ms,
    }


def _node(node_id: str, expiry_ms: float, announced: str) -> ClusterNode | None:
    """The node as announced, seen one lifetime before its expiry; None for an unreadable entry."""
    try:
        fields = json.loads(announced)
        seen_ms = expiry_ms - float(fields["ttl_ms"])
        return ClusterNode(
            node_id=node_id,
            api=str(fields["api"]),
            mcp=str(fields["mcp"]),
            version=str(fields["version"]),
            started_at=datetime.fromisoformat(fields["started_at"]),
            ready=fields["ready"] is True,
            last_seen=datetime.fromtimestamp(seen_ms / 1000, UTC),
        )
    except (ValueError, KeyError, TypeError):
        return None  # written by something else under our keys: not a node
