"""The `UserStore` contract, run against memory, SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from tests.conftest import BACKENDS
from tests.contract.identity_state import open_identity_state

from nexus.backends.memory import MemoryUserStore
from nexus.backends.sql import open_state
from nexus.core.auth.model import User
from nexus.core.auth.ports import UserStore
from nexus.errors import ConfigurationError

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def make_user(user_id: str = "u1", username: str = "alice", **changes: object) -> User:
    user = User(user_id=user_id, username=username, source="local", roles=frozenset(), created_at=T0)
    return replace(user, **changes)  # type: ignore[arg-type]  # test data: fields by name


@pytest.fixture(params=BACKENDS)
async def users(request: pytest.FixtureRequest) -> AsyncIterator[UserStore]:
    """The user store of one backend (memory, sqlite, postgres), empty."""
    if request.param == "memory":
        yield MemoryUserStore()
        return
    state = await open_identity_state(request.param, request)
    try:
        yield state.users
    finally:
        await state.close()


async def test_added_user_is_returned_by_get_with_every_field(users: UserStore) -> None:
    user = make_user(
        roles=frozenset({"admin", "analyst"}),
        attributes={"department": "finance", "clearance": 3, "projects": ["x", "y"]},
        password_hash="$argon2id$fake",
        phone="+15550100",
        disabled=True,
        tenants=frozenset({"acme", "globex"}),
    )
    await users.add(user)

    found = await users.get("u1")

    assert found == user
    assert found is not None
    assert (found.password_hash, found.phone, found.disabled) == ("$argon2id$fake", "+15550100", True)
    assert dict(found.attributes) == {"department": "finance", "clearance": 3, "projects": ["x", "y"]}


async def test_get_of_an_unknown_user_returns_none(users: UserStore) -> None:
    await users.add(make_user())

    assert await users.get("u2") is None


async def test_find_matches_the_username_in_any_letter_case(users: UserStore) -> None:
    await users.add(make_user(username="Alice"))

    for spelling in ("Alice", "alice", "ALICE"):
        found = await users.find(spelling)
        assert found is not None
        assert (found.user_id, found.username) == ("u1", "Alice")
    assert await users.find("alicia") is None


async def test_a_username_taken_in_another_letter_case_is_refused_and_the_original_kept(
    users: UserStore,
) -> None:
    await users.add(make_user("u1", "alice", roles=frozenset({"reader"})))

    with pytest.raises(ConfigurationError, match="'ALICE' is already taken"):
        await users.add(make_user("u2", "ALICE", roles=frozenset({"admin"})))

    assert await users.get("u2") is None
    found = await users.find("alice")
    assert found is not None
    assert (found.user_id, found.roles) == ("u1", frozenset({"reader"}))


async def test_a_taken_user_id_is_refused(users: UserStore) -> None:
    await users.add(make_user("u1", "alice"))

    with pytest.raises(ConfigurationError, match="already exists"):
        await users.add(make_user("u1", "bob"))

    assert await users.find("bob") is None


async def test_list_returns_every_user_by_username(users: UserStore) -> None:
    await users.add(make_user("u1", "carol"))
    await users.add(make_user("u2", "Alice"))
    await users.add(make_user("u3", "bob"))

    assert [user.username for user in await users.list()] == ["Alice", "bob", "carol"]


async def test_list_of_an_empty_store_is_empty(users: UserStore) -> None:
    assert list(await users.list()) == []


async def test_update_replaces_every_field_and_the_username_index(users: UserStore) -> None:
    await users.add(make_user("u1", "alice", roles=frozenset({"reader"})))
    changed = make_user(
        "u1",
        "alice.smith",
        roles=frozenset({"admin"}),
        attributes={"team": "ops"},
        password_hash="$argon2id$new",
        disabled=True,
    )

    await users.update(changed)

    assert await users.get("u1") == changed
    assert await users.find("Alice.Smith") == changed
    assert await users.find("alice") is None


async def test_a_user_added_without_tenants_belongs_to_none(users: UserStore) -> None:
    await users.add(make_user())

    found = await users.find("alice")

    assert found is not None
    assert found.tenants == frozenset()


async def test_update_replaces_the_tenants_and_can_empty_them(users: UserStore) -> None:
    await users.add(make_user(tenants=frozenset({"acme"})))

    await users.update(make_user(tenants=frozenset({"globex", "initech"})))
    moved = await users.get("u1")
    await users.update(make_user(tenants=frozenset()))
    emptied = await users.get("u1")

    assert moved is not None
    assert moved.tenants == frozenset({"globex", "initech"})
    assert emptied is not None
    assert emptied.tenants == frozenset()
    assert [user.tenants for user in await users.list()] == [frozenset()]


async def test_update_may_change_only_the_letter_case_of_the_username(users: UserStore) -> None:
    await users.add(make_user("u1", "alice"))

    await users.update(make_user("u1", "Alice"))

    found = await users.find("ALICE")
    assert found is not None
    assert found.username == "Alice"


async def test_update_to_another_users_name_is_refused_and_changes_nothing(users: UserStore) -> None:
    await users.add(make_user("u1", "alice"))
    await users.add(make_user("u2", "bob"))

    with pytest.raises(ConfigurationError, match="already taken"):
        await users.update(make_user("u2", "Alice", disabled=True))

    bob = await users.get("u2")
    assert bob is not None
    assert (bob.username, bob.disabled) == ("bob", False)
    alice = await users.find("alice")
    assert alice is not None
    assert alice.user_id == "u1"


async def test_update_of_an_unknown_user_is_refused_and_adds_nothing(users: UserStore) -> None:
    with pytest.raises(ConfigurationError, match="no user with id 'ghost'"):
        await users.update(make_user("ghost", "ghost"))

    assert await users.find("ghost") is None


async def test_delete_removes_the_user_and_frees_the_username(users: UserStore) -> None:
    await users.add(make_user("u1", "alice"))

    assert await users.delete("u1") is True
    assert await users.delete("u1") is False

    assert await users.get("u1") is None
    assert await users.find("alice") is None
    await users.add(make_user("u2", "Alice"))
    found = await users.find("alice")
    assert found is not None
    assert found.user_id == "u2"


async def test_created_at_with_another_offset_comes_back_as_the_same_instant_in_utc(users: UserStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    await users.add(make_user(created_at=datetime(2025, 3, 1, 14, 0, tzinfo=plus_two)))

    found = await users.get("u1")

    assert found is not None
    assert found.created_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert found.created_at.tzinfo == UTC


async def test_naive_datetimes_are_rejected(users: UserStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await users.add(make_user(created_at=datetime(2025, 3, 1, 12, 0)))

    assert await users.get("u1") is None


async def test_attributes_that_json_cannot_hold_are_rejected(users: UserStore) -> None:
    with pytest.raises(ValueError, match="JSON"):
        await users.add(make_user(attributes={"when": T0}))

    assert await users.get("u1") is None


async def test_stored_attributes_cannot_be_changed_through_the_returned_user(users: UserStore) -> None:
    attributes = {"team": "ops"}
    await users.add(make_user(attributes=attributes))
    attributes["team"] = "changed by the caller"

    found = await users.get("u1")

    assert found is not None
    assert dict(found.attributes) == {"team": "ops"}
    with pytest.raises(TypeError):
        found.attributes["team"] = "x"  # type: ignore[index]  # proving the mapping is read-only


async def test_concurrent_adds_of_one_username_let_exactly_one_win(users: UserStore) -> None:
    outcomes = await asyncio.gather(
        *(users.add(make_user(f"u{n}", "Alice" if n % 2 else "alice")) for n in range(6)),
        return_exceptions=True,
    )

    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(outcome, ConfigurationError) for outcome in outcomes if outcome is not None)
    assert len(await users.list()) == 1


async def test_the_password_hash_and_phone_stay_out_of_the_repr(users: UserStore) -> None:
    await users.add(make_user(password_hash="$argon2id$secret-hash", phone="+15550199"))

    found = await users.get("u1")

    assert "secret-hash" not in repr(found)
    assert "15550199" not in repr(found)


async def test_users_survive_closing_and_reopening(state_url: str) -> None:
    state = await open_state(state_url)
    await state.users.add(make_user(roles=frozenset({"admin"}), attributes={"a": 1}))
    await state.close()

    reopened = await open_state(state_url)
    try:
        found = await reopened.users.find("ALICE")
    finally:
        await reopened.close()

    assert found is not None
    assert (found.roles, dict(found.attributes)) == (frozenset({"admin"}), {"a": 1})
