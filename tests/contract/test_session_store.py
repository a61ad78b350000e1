"""The `SessionStore` contract, run against memory, SQLite, the real PostgreSQL and the real Redis.

Expiry runs on the wall clock (Redis expires keys on its own), so those tests use short lifetimes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio
from tests.conftest import BACKENDS
from tests.contract.conftest import delete_keys
from tests.contract.identity_state import open_identity_state

from nexus.backends.memory import MemorySessionStore
from nexus.backends.redis_sessions import RedisSessionStore
from nexus.backends.sql import open_state
from nexus.core.auth.model import Session
from nexus.core.auth.ports import SessionStore
from nexus.core.types import Channel
from nexus.errors import DependencyUnavailableError, InvalidInputError

SHORT_S = 0.3


def make_session(
    session_id: str = "s1",
    user_id: str = "u1",
    *,
    lifetime: timedelta = timedelta(hours=1),
    **changes: object,
) -> Session:
    now = datetime.now(UTC)
    session = Session(
        session_id=session_id,
        user_id=user_id,
        username=f"name-{user_id}",
        method="password",
        roles=frozenset({"reader"}),
        created_at=now,
        expires_at=now + lifetime,
        auth_time=now,
        origin_channel=Channel.API,
        secret_hash=f"hash-{session_id}",
    )
    return replace(session, **changes)  # type: ignore[arg-type]  # test data: fields by name


@pytest.fixture(params=[*BACKENDS, pytest.param("redis", marks=pytest.mark.redis)])
async def sessions(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[SessionStore]:
    """The session store of one backend (memory, sqlite, postgres, redis), empty."""
    if request.param == "memory":
        yield MemorySessionStore()
        return
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        store = RedisSessionStore(url, key_prefix=key_prefix)
        try:
            yield store
        finally:
            await store.close()
            await delete_keys(url, key_prefix)
        return
    state = await open_identity_state(request.param, request)
    try:
        yield state.sessions
    finally:
        await state.close()


async def test_created_session_is_returned_by_get_with_every_field(sessions: SessionStore) -> None:
    session = make_session(
        roles=frozenset({"admin", "analyst"}),
        attributes={"department": "finance", "groups": ["a", "b"]},
        origin_channel=Channel.MCP,
        method="oidc",
        tenant_id="acme",
        tenants=frozenset({"acme", "globex"}),
    )
    session = replace(session, mfa_time=session.auth_time, mfa_channels=frozenset({Channel.API, Channel.CLI}))
    await sessions.create(session)

    found = await sessions.get("s1")

    assert found == session
    assert found is not None
    assert found.secret_hash == "hash-s1"
    assert found.expires_at.tzinfo == UTC
    assert dict(found.attributes) == {"department": "finance", "groups": ["a", "b"]}


async def test_a_platform_session_has_no_tenant_and_no_tenants(sessions: SessionStore) -> None:
    await sessions.create(make_session("s1"))

    found = await sessions.get("s1")

    assert found is not None
    assert (found.tenant_id, found.tenants) == (None, frozenset())


async def test_revocation_and_reauthentication_keep_the_sessions_tenant(sessions: SessionStore) -> None:
    session = make_session("s1", tenant_id="acme", tenants=frozenset({"acme"}))
    await sessions.create(session)

    await sessions.reauthenticated(
        "s1", auth_time=session.auth_time, mfa_time=None, mfa_channels=frozenset({Channel.CLI})
    )
    await sessions.revoke("s1", datetime.now(UTC))

    found = await sessions.get("s1")
    assert found is not None
    assert (found.tenant_id, found.tenants) == ("acme", frozenset({"acme"}))


async def test_get_of_an_unknown_session_returns_none(sessions: SessionStore) -> None:
    await sessions.create(make_session("s1"))

    assert await sessions.get("s2") is None


async def test_a_duplicate_session_id_is_refused_and_the_original_kept(sessions: SessionStore) -> None:
    await sessions.create(make_session("s1", "u1"))

    with pytest.raises(InvalidInputError, match="already exists"):
        await sessions.create(make_session("s1", "u2"))

    found = await sessions.get("s1")
    assert found is not None
    assert found.user_id == "u1"


async def test_revoke_marks_the_session_revoked_and_it_stays_readable(sessions: SessionStore) -> None:
    await sessions.create(make_session("s1"))
    at = datetime.now(UTC)

    assert await sessions.revoke("s1", at) is True

    found = await sessions.get("s1")
    assert found is not None
    assert found.revoked_at == at
    assert not found.is_live(datetime.now(UTC))


async def test_revoking_again_keeps_the_first_revocation_time(sessions: SessionStore) -> None:
    await sessions.create(make_session("s1"))
    first = datetime.now(UTC)
    await sessions.revoke("s1", first)

    assert await sessions.revoke("s1", first + timedelta(minutes=5)) is True

    found = await sessions.get("s1")
    assert found is not None
    assert found.revoked_at == first


async def test_revoke_of_an_unknown_session_returns_false_and_creates_nothing(sessions: SessionStore) -> None:
    assert await sessions.revoke("nope", datetime.now(UTC)) is False

    assert await sessions.get("nope") is None


async def test_revoke_user_revokes_every_live_session_of_that_user_only(sessions: SessionStore) -> None:
    for session_id, user_id in [("a1", "alice"), ("a2", "alice"), ("a3", "alice"), ("b1", "bob")]:
        await sessions.create(make_session(session_id, user_id))
    earlier = datetime.now(UTC)
    await sessions.revoke("a3", earlier)
    at = earlier + timedelta(seconds=1)

    assert await sessions.revoke_user("alice", at) == 2
    assert await sessions.revoke_user("alice", at + timedelta(seconds=1)) == 0
    assert await sessions.revoke_user("nobody", at) == 0

    revoked = {sid: (await sessions.get(sid)).revoked_at for sid in ("a1", "a2", "a3", "b1")}  # type: ignore[union-attr]
    assert revoked == {"a1": at, "a2": at, "a3": earlier, "b1": None}


async def test_reauthenticated_replaces_the_proof_times_of_a_live_session(sessions: SessionStore) -> None:
    session = make_session("s1", mfa_channels=frozenset({Channel.API}))
    await sessions.create(session)
    later = session.auth_time + timedelta(minutes=10)

    changed = await sessions.reauthenticated(
        "s1", auth_time=later, mfa_time=later, mfa_channels=frozenset({Channel.API, Channel.MCP})
    )

    assert changed is True
    found = await sessions.get("s1")
    assert found == replace(
        session, auth_time=later, mfa_time=later, mfa_channels=frozenset({Channel.API, Channel.MCP})
    )


async def test_reauthenticated_without_mfa_clears_the_mfa_time(sessions: SessionStore) -> None:
    session = make_session("s1")
    await sessions.create(replace(session, mfa_time=session.auth_time, mfa_channels=frozenset({Channel.CLI})))
    later = session.auth_time + timedelta(minutes=1)

    assert await sessions.reauthenticated("s1", auth_time=later, mfa_time=None, mfa_channels=frozenset())

    found = await sessions.get("s1")
    assert found is not None
    assert (found.auth_time, found.mfa_time, found.mfa_channels) == (later, None, frozenset())


async def test_a_revoked_or_unknown_session_cannot_be_reauthenticated(sessions: SessionStore) -> None:
    session = make_session("s1")
    await sessions.create(session)
    await sessions.revoke("s1", datetime.now(UTC))
    later = session.auth_time + timedelta(minutes=1)

    assert not await sessions.reauthenticated("s1", auth_time=later, mfa_time=later, mfa_channels=frozenset())
    assert not await sessions.reauthenticated(
        "nope", auth_time=later, mfa_time=None, mfa_channels=frozenset()
    )

    found = await sessions.get("s1")
    assert found is not None
    assert (found.auth_time, found.mfa_time) == (session.auth_time, None)
    assert await sessions.get("nope") is None


async def test_an_expired_session_reads_as_unknown_and_cannot_be_revoked(sessions: SessionStore) -> None:
    await sessions.create(make_session("short", "u1", lifetime=timedelta(seconds=SHORT_S)))
    await sessions.create(make_session("long", "u1"))
    assert await sessions.get("short") is not None

    await asyncio.sleep(SHORT_S + 0.1)

    assert await sessions.get("short") is None
    assert await sessions.revoke("short", datetime.now(UTC)) is False
    assert await sessions.revoke_user("u1", datetime.now(UTC)) == 1
    assert await sessions.get("long") is not None


async def test_a_revoked_session_also_disappears_when_it_expires(sessions: SessionStore) -> None:
    await sessions.create(make_session("s1", lifetime=timedelta(seconds=SHORT_S)))
    await sessions.revoke("s1", datetime.now(UTC))

    await asyncio.sleep(SHORT_S + 0.1)

    assert await sessions.get("s1") is None


async def test_concurrent_revocations_keep_exactly_one_time(sessions: SessionStore) -> None:
    await sessions.create(make_session("s1"))
    base = datetime.now(UTC)
    times = [base + timedelta(seconds=n) for n in range(5)]

    outcomes = await asyncio.gather(*(sessions.revoke("s1", at) for at in times))

    assert outcomes == [True] * 5
    found = await sessions.get("s1")
    assert found is not None
    assert found.revoked_at in times


async def test_naive_datetimes_are_rejected(sessions: SessionStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await sessions.create(make_session("s1", expires_at=datetime(2999, 1, 1)))
    await sessions.create(make_session("s2"))

    with pytest.raises(ValueError, match="timezone-aware"):
        await sessions.revoke("s2", datetime(2025, 1, 1))

    assert await sessions.get("s1") is None
    found = await sessions.get("s2")
    assert found is not None
    assert found.revoked_at is None


@pytest.mark.redis
async def test_redis_deletes_a_session_by_itself_when_it_expires(redis_url: str, key_prefix: str) -> None:
    store = RedisSessionStore(redis_url, key_prefix=key_prefix)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await store.create(make_session("s1", "u1", lifetime=timedelta(seconds=SHORT_S)))
        assert 0 < await client.pttl(f"{key_prefix}s:s1") <= SHORT_S * 1000
        assert 0 < await client.pttl(f"{key_prefix}u:u1") <= SHORT_S * 1000

        await asyncio.sleep(SHORT_S + 0.1)

        # Nothing read the keys: Redis removed them on its own.
        assert [key async for key in client.scan_iter(match=f"{key_prefix}*")] == []
    finally:
        await client.aclose()
        await store.close()
        await delete_keys(redis_url, key_prefix)


@pytest.mark.redis
async def test_a_later_session_keeps_the_users_index_alive_longer(redis_url: str, key_prefix: str) -> None:
    store = RedisSessionStore(redis_url, key_prefix=key_prefix)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await store.create(make_session("long", "u1", lifetime=timedelta(hours=1)))
        await store.create(make_session("short", "u1", lifetime=timedelta(seconds=SHORT_S)))

        assert await client.pttl(f"{key_prefix}u:u1") > 3_000_000
        await asyncio.sleep(SHORT_S + 0.1)
        assert await store.revoke_user("u1", datetime.now(UTC)) == 1
        assert await client.smembers(f"{key_prefix}u:u1") == {b"long"}
    finally:
        await client.aclose()
        await store.close()
        await delete_keys(redis_url, key_prefix)


@pytest.mark.redis
async def test_two_redis_nodes_see_each_others_sessions_and_revocations(
    redis_url: str, key_prefix: str
) -> None:
    node_a = RedisSessionStore(redis_url, key_prefix=key_prefix)
    node_b = RedisSessionStore(redis_url, key_prefix=key_prefix)
    try:
        await node_a.create(make_session("s1", "u1"))
        assert await node_b.revoke_user("u1", datetime.now(UTC)) == 1

        found = await node_a.get("s1")
        assert found is not None
        assert found.revoked_at is not None
    finally:
        await node_a.close()
        await node_b.close()
        await delete_keys(redis_url, key_prefix)


@pytest.mark.redis
async def test_a_redis_session_stored_before_tenancy_reads_as_belonging_to_no_tenant(
    redis_url: str, key_prefix: str
) -> None:
    store = RedisSessionStore(redis_url, key_prefix=key_prefix)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await store.create(make_session("old", tenant_id="acme", tenants=frozenset({"acme"})))
        # What a node of an earlier version wrote: the same hash without the tenant fields.
        await client.hdel(f"{key_prefix}s:old", "tenant_id", "tenants")

        found = await store.get("old")
    finally:
        await client.aclose()
        await store.close()
        await delete_keys(redis_url, key_prefix)

    assert found is not None
    assert (found.tenant_id, found.tenants) == (None, frozenset())


async def test_sessions_survive_closing_and_reopening_the_sql_state(state_url: str) -> None:
    state = await open_state(state_url)
    await state.sessions.create(make_session("s1", mfa_channels=frozenset({Channel.CLI})))
    await state.close()

    reopened = await open_state(state_url)
    try:
        found = await reopened.sessions.get("s1")
    finally:
        await reopened.close()

    assert found is not None
    assert found.mfa_channels == frozenset({Channel.CLI})


async def test_an_unreachable_redis_is_unavailable_and_the_error_hides_the_password() -> None:
    # Port 1 on loopback refuses at once; no server is needed to show the failure path.
    store = RedisSessionStore("redis://:s3cret-pw@127.0.0.1:1/0", timeout_s=0.5)
    try:
        with pytest.raises(DependencyUnavailableError) as caught:
            await store.get("s1")
    finally:
        await store.close()

    assert "s3cret-pw" not in caught.value.message
    assert "s3cret-pw" not in str(caught.value)
