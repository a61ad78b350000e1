"""The `KeyStore` contract, run against memory, SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

from nexus.backends.sql import open_state
from nexus.core.ports import KeyStore
from nexus.core.types import ApiKey
from nexus.errors import DependencyUnavailableError, InvalidInputError

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def make_key(
    key_id: str = "k1",
    *,
    created_at: datetime = T0,
    roles: frozenset[str] = frozenset(),
    tenants: frozenset[str] = frozenset(),
) -> ApiKey:
    return ApiKey(
        key_id=key_id,
        name=f"name of {key_id}",
        secret_hash=f"hash-{key_id}",
        roles=roles,
        created_at=created_at,
        tenants=tenants,
    )


async def test_added_key_is_returned_by_get_with_every_field(key_store: KeyStore) -> None:
    key = make_key(roles=frozenset({"admin", "analyst"}), tenants=frozenset({"acme", "globex"}))
    await key_store.add(key)

    found = await key_store.get("k1")

    assert found == key
    assert found is not None
    assert found.secret_hash == "hash-k1"


async def test_keys_tenants_come_back_from_list_and_after_revocation(key_store: KeyStore) -> None:
    await key_store.add(make_key("platform"))
    await key_store.add(make_key("tenant", tenants=frozenset({"acme"})))
    await key_store.revoke("tenant", T0)

    listed = {key.key_id: key.tenants for key in await key_store.list()}
    revoked = await key_store.get("tenant")

    assert listed == {"platform": frozenset(), "tenant": frozenset({"acme"})}
    assert revoked is not None
    assert revoked.tenants == frozenset({"acme"})


async def test_get_of_an_unknown_key_returns_none(key_store: KeyStore) -> None:
    await key_store.add(make_key("k1"))

    assert await key_store.get("k2") is None


async def test_adding_a_duplicate_key_id_raises_and_keeps_the_original(key_store: KeyStore) -> None:
    await key_store.add(make_key("k1", roles=frozenset({"reader"})))

    with pytest.raises(InvalidInputError, match="already exists"):
        await key_store.add(make_key("k1", roles=frozenset({"admin"})))

    found = await key_store.get("k1")
    assert found is not None
    assert found.roles == frozenset({"reader"})


async def test_list_returns_every_key_oldest_first(key_store: KeyStore) -> None:
    await key_store.add(make_key("b", created_at=T0 + timedelta(seconds=2)))
    await key_store.add(make_key("c", created_at=T0))
    await key_store.add(make_key("a", created_at=T0 + timedelta(seconds=2)))

    assert [key.key_id for key in await key_store.list()] == ["c", "a", "b"]


async def test_list_of_an_empty_store_is_empty(key_store: KeyStore) -> None:
    assert list(await key_store.list()) == []


async def test_revoke_marks_the_key_revoked_at_the_given_time(key_store: KeyStore) -> None:
    await key_store.add(make_key("k1"))
    at = T0 + timedelta(hours=1)

    assert await key_store.revoke("k1", at) is True

    found = await key_store.get("k1")
    assert found is not None
    assert found.is_revoked
    assert found.revoked_at == at


async def test_revoke_of_an_unknown_key_returns_false_and_changes_nothing(key_store: KeyStore) -> None:
    await key_store.add(make_key("k1"))

    assert await key_store.revoke("nope", T0) is False
    found = await key_store.get("k1")
    assert found is not None
    assert not found.is_revoked


async def test_revoking_again_keeps_the_first_revocation_time(key_store: KeyStore) -> None:
    await key_store.add(make_key("k1"))
    first = T0 + timedelta(minutes=1)
    await key_store.revoke("k1", first)

    assert await key_store.revoke("k1", first + timedelta(days=1)) is True

    found = await key_store.get("k1")
    assert found is not None
    assert found.revoked_at == first


async def test_revoking_one_key_leaves_the_others_valid(key_store: KeyStore) -> None:
    await key_store.add(make_key("k1"))
    await key_store.add(make_key("k2"))

    await key_store.revoke("k1", T0)

    assert {key.key_id: key.is_revoked for key in await key_store.list()} == {"k1": True, "k2": False}


async def test_times_with_another_offset_come_back_as_the_same_instant_in_utc(key_store: KeyStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    await key_store.add(make_key("k1", created_at=datetime(2025, 3, 1, 14, 0, tzinfo=plus_two)))
    await key_store.revoke("k1", datetime(2025, 3, 1, 15, 30, tzinfo=plus_two))

    found = await key_store.get("k1")

    assert found is not None
    assert found.created_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert found.created_at.tzinfo == UTC
    assert found.revoked_at == datetime(2025, 3, 1, 13, 30, tzinfo=UTC)
    assert found.revoked_at is not None
    assert found.revoked_at.tzinfo == UTC


async def test_naive_datetimes_are_rejected(key_store: KeyStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await key_store.add(make_key("k1", created_at=datetime(2025, 3, 1, 12, 0)))

    assert await key_store.get("k1") is None


async def test_keys_and_revocations_survive_closing_and_reopening(state_url: str) -> None:
    state = await open_state(state_url)
    await state.keys.add(make_key("k1", roles=frozenset({"admin"})))
    await state.keys.revoke("k1", T0)
    await state.close()

    reopened = await open_state(state_url)
    try:
        found = await reopened.keys.get("k1")
    finally:
        await reopened.close()

    assert found is not None
    assert found.roles == frozenset({"admin"})
    assert found.revoked_at == T0


# Each child imports everything, says "ready", then opens the store when told "go": they start together.
_OPEN_STATE_IN_CHILD = """
import asyncio, sys
from nexus.backends.sql import open_state

async def main() -> None:
    print("ready", flush=True)
    sys.stdin.readline()
    state = await open_state(sys.argv[1])
    await state.close()

asyncio.run(main())
"""


async def test_processes_starting_together_on_an_empty_database_all_migrate_cleanly(state_url: str) -> None:
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _OPEN_STATE_IN_CHILD,
            state_url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for child in children:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), timeout=60) == b"ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
    outcomes = [await asyncio.wait_for(child.communicate(), timeout=60) for child in children]

    assert [child.returncode for child in children] == [0, 0, 0, 0], [err.decode() for _, err in outcomes]
    state = await open_state(state_url)
    try:
        await state.keys.add(make_key("k1"))
        assert await state.keys.get("k1") is not None
    finally:
        await state.close()


async def test_opening_an_already_migrated_database_again_changes_nothing(state_url: str) -> None:
    first = await open_state(state_url)
    await first.keys.add(make_key("k1"))
    second = await open_state(state_url)
    try:
        assert [key.key_id for key in await second.keys.list()] == ["k1"]
    finally:
        await second.close()
        await first.close()


async def test_an_unreachable_database_is_unavailable_and_the_error_hides_the_password() -> None:
    # Port 1 on loopback refuses at once; no server is needed to show the failure path.
    with pytest.raises(DependencyUnavailableError) as caught:
        await open_state("postgresql://nexus:s3cret-pw@127.0.0.1:1/nexus")

    assert "s3cret-pw" not in caught.value.message
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1:1" in caught.value.message
