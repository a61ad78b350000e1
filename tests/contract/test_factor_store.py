"""The `FactorStore` contract, run against memory, SQLite and the real PostgreSQL.

The one-time checks (TOTP steps, WebAuthn counters, recovery codes) are raced by concurrent
callers: on SQL each caller gets its own connection, so the database decides who wins.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from tests.conftest import BACKENDS
from tests.contract.identity_state import open_identity_state

from nexus.backends.memory import MemoryFactorStore
from nexus.backends.sql import open_state
from nexus.core.auth.model import Factor, FactorKind
from nexus.core.auth.ports import FactorStore
from nexus.errors import InvalidInputError

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
RACERS = 5


def make_factor(
    factor_id: str = "f1", user_id: str = "u1", kind: FactorKind = FactorKind.TOTP, **changes: object
) -> Factor:
    factor = Factor(
        factor_id=factor_id, user_id=user_id, kind=kind, secret=f"seed-{factor_id}", created_at=T0
    )
    return replace(factor, **changes)  # type: ignore[arg-type]  # test data: fields by name


@pytest.fixture(params=BACKENDS)
async def factors(request: pytest.FixtureRequest) -> AsyncIterator[FactorStore]:
    """The factor store of one backend (memory, sqlite, postgres), empty."""
    if request.param == "memory":
        yield MemoryFactorStore()
        return
    state = await open_identity_state(request.param, request)
    try:
        yield state.factors
    finally:
        await state.close()


async def only_factor(factors: FactorStore, user_id: str = "u1") -> Factor:
    [factor] = await factors.for_user(user_id)
    return factor


async def test_added_factor_is_returned_with_every_field(factors: FactorStore) -> None:
    factor = make_factor(
        kind=FactorKind.HARDWARE_KEY,
        secret="pQECAyYgASFYIB",
        label="YubiKey 5",
        credential_id="cred-1",
        sign_count=7,
        last_step=-1,
        active=True,
        used_at=T0 + timedelta(minutes=1),
    )
    await factors.add(factor)

    assert await only_factor(factors) == factor


async def test_for_user_returns_only_that_users_factors_oldest_first(factors: FactorStore) -> None:
    await factors.add(make_factor("b", created_at=T0 + timedelta(seconds=2)))
    await factors.add(make_factor("c", created_at=T0))
    await factors.add(make_factor("a", created_at=T0 + timedelta(seconds=2), kind=FactorKind.RECOVERY))
    await factors.add(make_factor("other", user_id="u2"))

    assert [factor.factor_id for factor in await factors.for_user("u1")] == ["c", "a", "b"]
    assert [factor.factor_id for factor in await factors.for_user("u2")] == ["other"]
    assert list(await factors.for_user("nobody")) == []


async def test_a_duplicate_factor_id_is_refused_and_the_original_kept(factors: FactorStore) -> None:
    await factors.add(make_factor("f1", label="phone"))

    with pytest.raises(InvalidInputError, match="already exists"):
        await factors.add(make_factor("f1", label="other"))

    assert (await only_factor(factors)).label == "phone"


async def test_a_security_key_cannot_be_registered_twice(factors: FactorStore) -> None:
    await factors.add(make_factor("f1", kind=FactorKind.HARDWARE_KEY, credential_id="cred-1"))

    with pytest.raises(InvalidInputError, match="already registered"):
        await factors.add(
            make_factor("f2", user_id="u2", kind=FactorKind.HARDWARE_KEY, credential_id="cred-1")
        )

    assert list(await factors.for_user("u2")) == []


async def test_factors_without_a_credential_id_do_not_collide(factors: FactorStore) -> None:
    await factors.add(make_factor("f1"))
    await factors.add(make_factor("f2"))

    assert len(await factors.for_user("u1")) == 2


async def test_activate_marks_a_factor_active(factors: FactorStore) -> None:
    await factors.add(make_factor("f1"))
    assert (await only_factor(factors)).active is False

    assert await factors.activate("f1") is True
    assert await factors.activate("f1") is True

    assert (await only_factor(factors)).active is True
    assert await factors.activate("nope") is False


async def test_a_totp_step_is_accepted_once_and_never_an_earlier_one(factors: FactorStore) -> None:
    await factors.add(make_factor("f1"))

    assert await factors.advance_step("f1", 1000) is True
    assert await factors.advance_step("f1", 1000) is False
    assert await factors.advance_step("f1", 999) is False
    assert await factors.advance_step("f1", 1001) is True

    assert (await only_factor(factors)).last_step == 1001
    assert await factors.advance_step("nope", 5000) is False


async def test_concurrent_uses_of_one_totp_step_let_exactly_one_through(factors: FactorStore) -> None:
    await factors.add(make_factor("f1", last_step=41))

    outcomes = await asyncio.gather(*(factors.advance_step("f1", 42) for _ in range(RACERS)))

    assert sorted(outcomes) == [False] * (RACERS - 1) + [True]
    assert (await only_factor(factors)).last_step == 42


async def test_a_webauthn_counter_is_stored_only_when_it_grew(factors: FactorStore) -> None:
    await factors.add(make_factor("f1", kind=FactorKind.HARDWARE_KEY, sign_count=5))

    assert await factors.advance_sign_count("f1", 6) is True
    assert await factors.advance_sign_count("f1", 6) is False
    assert await factors.advance_sign_count("f1", 3) is False
    assert await factors.advance_sign_count("f1", 0) is False
    assert await factors.advance_sign_count("f1", 2**32 - 1) is True

    assert (await only_factor(factors)).sign_count == 2**32 - 1
    assert await factors.advance_sign_count("nope", 10) is False


async def test_an_authenticator_without_a_counter_passes_while_it_stays_at_zero(factors: FactorStore) -> None:
    await factors.add(make_factor("f1", kind=FactorKind.HARDWARE_KEY, sign_count=0))

    assert await factors.advance_sign_count("f1", 0) is True
    assert await factors.advance_sign_count("f1", 0) is True
    assert await factors.advance_sign_count("f1", 1) is True
    # Once it has shown a counter, a zero means a clone or a reset: refused.
    assert await factors.advance_sign_count("f1", 0) is False


async def test_concurrent_counters_of_one_value_let_exactly_one_through(factors: FactorStore) -> None:
    await factors.add(make_factor("f1", kind=FactorKind.HARDWARE_KEY, sign_count=9))

    outcomes = await asyncio.gather(*(factors.advance_sign_count("f1", 10) for _ in range(RACERS)))

    assert sorted(outcomes) == [False] * (RACERS - 1) + [True]


async def test_a_recovery_code_is_used_once_and_keeps_its_first_use_time(factors: FactorStore) -> None:
    await factors.add(make_factor("f1", kind=FactorKind.RECOVERY))
    first = T0 + timedelta(hours=1)

    assert await factors.use_once("f1", first) is True
    assert await factors.use_once("f1", first + timedelta(hours=1)) is False

    assert (await only_factor(factors)).used_at == first
    assert await factors.use_once("nope", first) is False


async def test_concurrent_uses_of_one_recovery_code_let_exactly_one_through(factors: FactorStore) -> None:
    await factors.add(make_factor("f1", kind=FactorKind.RECOVERY))

    outcomes = await asyncio.gather(
        *(factors.use_once("f1", T0 + timedelta(seconds=n)) for n in range(RACERS))
    )

    assert sorted(outcomes) == [False] * (RACERS - 1) + [True]
    winner = outcomes.index(True)
    assert (await only_factor(factors)).used_at == T0 + timedelta(seconds=winner)


async def test_remove_deletes_only_that_factor(factors: FactorStore) -> None:
    await factors.add(make_factor("f1"))
    await factors.add(make_factor("f2"))

    assert await factors.remove("f1") is True
    assert await factors.remove("f1") is False

    assert [factor.factor_id for factor in await factors.for_user("u1")] == ["f2"]
    assert await factors.advance_step("f1", 1) is False


async def test_naive_datetimes_are_rejected(factors: FactorStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await factors.add(make_factor("f1", created_at=datetime(2025, 3, 1, 12, 0)))
    await factors.add(make_factor("f2", kind=FactorKind.RECOVERY))

    with pytest.raises(ValueError, match="timezone-aware"):
        await factors.use_once("f2", datetime(2025, 3, 1, 12, 0))

    assert [(factor.factor_id, factor.used_at) for factor in await factors.for_user("u1")] == [("f2", None)]


async def test_the_secret_stays_out_of_the_repr(factors: FactorStore) -> None:
    await factors.add(make_factor("f1", secret="JBSWY3DPEHPK3PXP"))

    assert "JBSWY3DPEHPK3PXP" not in repr(await only_factor(factors))


async def test_two_nodes_on_one_database_share_the_one_time_checks(state_url: str) -> None:
    node_a, node_b = await open_state(state_url), await open_state(state_url)
    try:
        await node_a.factors.add(make_factor("f1"))
        assert await node_b.factors.advance_step("f1", 7) is True
        assert await node_a.factors.advance_step("f1", 7) is False
    finally:
        await node_a.close()
        await node_b.close()
