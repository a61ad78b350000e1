"""The `SigningKeyStore` contract, run against memory, SQLite and the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from tests.conftest import BACKENDS
from tests.contract.identity_state import open_identity_state

from nexus.backends.memory import MemorySigningKeyStore
from nexus.backends.sql import open_state
from nexus.core.auth.model import SigningKey
from nexus.core.auth.ports import SigningKeyStore
from nexus.errors import InvalidInputError

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
PEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIFAKEFAKEFAKE\n-----END PRIVATE KEY-----\n"


def make_key(kid: str = "k1", *, created_at: datetime = T0) -> SigningKey:
    return SigningKey(kid=kid, algorithm="EdDSA", private_pem=PEM, created_at=created_at)


@pytest.fixture(params=BACKENDS)
async def signing_keys(request: pytest.FixtureRequest) -> AsyncIterator[SigningKeyStore]:
    """The signing key store of one backend (memory, sqlite, postgres), empty."""
    if request.param == "memory":
        yield MemorySigningKeyStore()
        return
    state = await open_identity_state(request.param, request)
    try:
        yield state.signing_keys
    finally:
        await state.close()


async def test_added_key_is_listed_with_every_field(signing_keys: SigningKeyStore) -> None:
    key = make_key()
    await signing_keys.add(key)

    assert list(await signing_keys.list()) == [key]
    [found] = await signing_keys.list()
    assert found.private_pem == PEM


async def test_list_returns_every_key_oldest_first(signing_keys: SigningKeyStore) -> None:
    await signing_keys.add(make_key("b", created_at=T0 + timedelta(days=1)))
    await signing_keys.add(make_key("c", created_at=T0))
    await signing_keys.add(make_key("a", created_at=T0 + timedelta(days=1)))

    assert [key.kid for key in await signing_keys.list()] == ["c", "a", "b"]


async def test_list_of_an_empty_store_is_empty(signing_keys: SigningKeyStore) -> None:
    assert list(await signing_keys.list()) == []


async def test_a_duplicate_kid_is_refused_and_the_original_kept(signing_keys: SigningKeyStore) -> None:
    await signing_keys.add(make_key("k1"))

    with pytest.raises(InvalidInputError, match="already exists"):
        await signing_keys.add(SigningKey(kid="k1", algorithm="ES256", private_pem="other", created_at=T0))

    assert [key.algorithm for key in await signing_keys.list()] == ["EdDSA"]


async def test_retire_marks_the_key_retired_and_keeps_it_listed(signing_keys: SigningKeyStore) -> None:
    await signing_keys.add(make_key("k1"))
    await signing_keys.add(make_key("k2"))
    at = T0 + timedelta(days=30)

    assert await signing_keys.retire("k1", at) is True

    assert {key.kid: key.retired_at for key in await signing_keys.list()} == {"k1": at, "k2": None}


async def test_retiring_again_keeps_the_first_retirement_time(signing_keys: SigningKeyStore) -> None:
    await signing_keys.add(make_key("k1"))
    first = T0 + timedelta(days=1)
    await signing_keys.retire("k1", first)

    assert await signing_keys.retire("k1", first + timedelta(days=1)) is True

    assert [key.retired_at for key in await signing_keys.list()] == [first]


async def test_retire_of_an_unknown_key_returns_false(signing_keys: SigningKeyStore) -> None:
    await signing_keys.add(make_key("k1"))

    assert await signing_keys.retire("nope", T0) is False
    assert [key.retired_at for key in await signing_keys.list()] == [None]


async def test_times_with_another_offset_come_back_as_the_same_instant_in_utc(
    signing_keys: SigningKeyStore,
) -> None:
    plus_two = timezone(timedelta(hours=2))
    await signing_keys.add(make_key("k1", created_at=datetime(2025, 3, 1, 14, 0, tzinfo=plus_two)))
    await signing_keys.retire("k1", datetime(2025, 3, 1, 15, 0, tzinfo=plus_two))

    [found] = await signing_keys.list()

    assert (found.created_at, found.retired_at) == (
        datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        datetime(2025, 3, 1, 13, 0, tzinfo=UTC),
    )
    assert found.created_at.tzinfo == UTC


async def test_naive_datetimes_are_rejected(signing_keys: SigningKeyStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await signing_keys.add(make_key("k1", created_at=datetime(2025, 3, 1, 12, 0)))

    assert list(await signing_keys.list()) == []


async def test_the_private_key_stays_out_of_the_repr(signing_keys: SigningKeyStore) -> None:
    await signing_keys.add(make_key("k1"))

    assert "FAKEFAKE" not in repr(await signing_keys.list())


async def test_a_key_added_by_one_node_is_seen_by_another(state_url: str) -> None:
    node_a, node_b = await open_state(state_url), await open_state(state_url)
    try:
        await node_a.signing_keys.add(make_key("k1"))
        await node_b.signing_keys.retire("k1", T0)

        assert [(key.kid, key.retired_at) for key in await node_a.signing_keys.list()] == [("k1", T0)]
    finally:
        await node_a.close()
        await node_b.close()
