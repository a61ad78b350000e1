"""Where a Redis URL points, for messages: `host:port`, never its user name or password."""

from __future__ import annotations

from urllib.parse import urlsplit

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
