"""What the Redis-backed contract tests share: a key prefix of their own, and removing its keys."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio


@pytest.fixture
def key_prefix() -> str:
    # One prefix per test, so concurrent runs and earlier failures never share keys.
    return f"nexus-test-{uuid.uuid4().hex}:"


async def delete_keys(url: str, prefix: str) -> None:
    """Remove every key under `prefix` from the Redis at `url`."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
