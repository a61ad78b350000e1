"""Redis URLs: where one points (for messages: `host:port`, never its credentials), and clients
and pools built from one the same way for every Redis-backed store (timeouts, URL errors)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis.asyncio

from nexus.errors import ConfigurationError

_REDIS_SCHEMES = frozenset({"redis", "rediss"})


def redis_location(url: str) -> str:
    """`host:port` of a Redis URL, for messages: never its user name or password."""
    parts = urlsplit(url)
    if parts.scheme not in _REDIS_SCHEMES:
        raise ConfigurationError(
            f"redis_url must start with redis:// or rediss://, got scheme {parts.scheme or '(none)'!r}."
        )
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigurationError("redis_url has an invalid port.") from exc
    return f"redis {parts.hostname or 'localhost'}:{port}"


def redis_client(url: str, *, timeout_s: float, decode_responses: bool = False) -> redis.asyncio.Redis:
    """A client with connect and command timeouts; a URL it cannot use is a `ConfigurationError`."""
    client: redis.asyncio.Redis = _from_url(
        redis.asyncio.Redis, url, timeout_s, decode_responses=decode_responses
    )
    return client


def redis_pool(url: str, *, timeout_s: float) -> redis.asyncio.ConnectionPool:
    """A connection pool with the same timeouts, for libraries that take a pool."""
    pool: redis.asyncio.ConnectionPool = _from_url(redis.asyncio.ConnectionPool, url, timeout_s)
    return pool


def _from_url(kind: Any, url: str, timeout_s: float, **options: Any) -> Any:
    location = redis_location(url)
    try:
        return kind.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, **options)
    except ValueError as exc:
        raise ConfigurationError(f"redis_url for {location} is not valid: {exc}") from exc
