"""The real OpenID provider process and a fresh login-state store per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nexus.backends.ephemeral import MemoryEphemeralStore


@pytest.fixture
async def ephemeral() -> AsyncIterator[MemoryEphemeralStore]:
    store = MemoryEphemeralStore()
    yield store
    await store.close()
