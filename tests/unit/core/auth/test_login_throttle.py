"""Login throttling: per (account, address), per account and per address, with locks that expire.

Lock markers live in the ephemeral store and move with the fake clock; the failure counters are the
real moving-window counters (wall time), so only the window test sleeps, for about a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from tests.unit.core.auth.rig import ADDRESS, PASSWORD, IdentityRig, challenge_of, mfa_everywhere

from nexus.core.auth.policy import ThrottlePolicy
from nexus.core.types import Channel
from nexus.errors import AccountLockedError, AuthenticationError, MfaRequiredError

Build = Callable[..., IdentityRig]
LOCKOUT_S = 60
HOME = "203.0.113.1"


def limits(
    *, per_pair: int = 100, per_account: int = 100, per_address: int = 100, window_s: int = 900
) -> ThrottlePolicy:
    return ThrottlePolicy(
        window_s=window_s,
        per_pair=per_pair,
        per_account=per_account,
        per_address=per_address,
        lockout_s=LOCKOUT_S,
    )


async def fail(rig: IdentityRig, times: int, *, username: str = "alice", address: str = ADDRESS) -> None:
    for _ in range(times):
        with pytest.raises(AuthenticationError) as raised:
            await rig.login(username, "wrong password", address=address)
        assert type(raised.value) is AuthenticationError


async def test_after_per_pair_failures_the_pair_is_locked_even_for_the_right_password(build: Build) -> None:
    rig = build(throttle=limits(per_pair=3))
    await rig.add_user("alice")
    await fail(rig, 3)
    with pytest.raises(AccountLockedError) as raised:
        await rig.login()
    assert raised.value.retry_after == LOCKOUT_S
    assert raised.value.detail["retry_after"] == LOCKOUT_S
    assert raised.value.http_status == 429


async def test_fewer_failures_than_the_limit_lock_nothing(build: Build) -> None:
    rig = build(throttle=limits(per_pair=3))
    await rig.add_user("alice")
    await fail(rig, 2)
    assert await rig.login()


async def test_a_pair_lock_leaves_other_addresses_and_other_accounts_alone(build: Build) -> None:
    rig = build(throttle=limits(per_pair=3))
    await rig.add_user("alice")
    await rig.add_user("bob")
    await fail(rig, 3)
    assert await rig.login("alice", address=HOME)
    assert await rig.login("bob", address=ADDRESS)


async def test_a_lock_counts_down_and_expires(build: Build) -> None:
    rig = build(throttle=limits(per_pair=3))
    await rig.add_user("alice")
    await fail(rig, 3)
    rig.clock.advance(45)
    with pytest.raises(AccountLockedError) as raised:
        await rig.login()
    assert raised.value.retry_after == LOCKOUT_S - 45
    rig.clock.advance(LOCKOUT_S - 45)
    assert await rig.login()


async def test_after_per_account_failures_from_many_addresses_new_addresses_are_locked(build: Build) -> None:
    rig = build(throttle=limits(per_account=4))
    await rig.add_user("alice")
    await fail(rig, 2, address="192.0.2.1")
    await fail(rig, 2, address="192.0.2.2")
    with pytest.raises(AccountLockedError):
        await rig.login(address="192.0.2.3")


async def test_an_account_lock_spares_an_address_the_user_logged_in_from_before(build: Build) -> None:
    rig = build(throttle=limits(per_account=4))
    await rig.add_user("alice")
    await rig.add_user("bob")
    await rig.login(address=HOME)
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"):
        await fail(rig, 1, address=address)
    with pytest.raises(AccountLockedError):
        await rig.login(address="192.0.2.5")
    assert await rig.login(address=HOME)
    assert await rig.login("bob", address="192.0.2.5")


async def test_an_account_lock_expires(build: Build) -> None:
    rig = build(throttle=limits(per_account=2))
    await rig.add_user("alice")
    await fail(rig, 1, address="192.0.2.1")
    await fail(rig, 1, address="192.0.2.2")
    with pytest.raises(AccountLockedError):
        await rig.login(address="192.0.2.3")
    rig.clock.advance(LOCKOUT_S)
    assert await rig.login(address="192.0.2.3")


async def test_after_per_address_failures_the_address_is_locked_for_every_account(build: Build) -> None:
    rig = build(throttle=limits(per_address=3))
    await rig.add_user("alice")
    for username in ("u1", "u2", "u3"):
        await fail(rig, 1, username=username)
    with pytest.raises(AccountLockedError):
        await rig.login("alice")
    assert await rig.login("alice", address=HOME)


async def test_a_success_clears_the_pair_counter(build: Build) -> None:
    rig = build(throttle=limits(per_pair=3))
    await rig.add_user("alice")
    await fail(rig, 2)
    await rig.login()
    await fail(rig, 2)
    assert await rig.login()


async def test_usernames_are_counted_case_insensitively(build: Build) -> None:
    rig = build(throttle=limits(per_pair=3))
    await rig.add_user("alice")
    for username in ("Alice", "ALICE", "alice"):
        await fail(rig, 1, username=username)
    with pytest.raises(AccountLockedError):
        await rig.login("aLiCe")


async def test_unknown_accounts_are_locked_the_same_way_as_real_ones(build: Build) -> None:
    rig = build(throttle=limits(per_pair=2))
    await rig.add_user("alice")
    await fail(rig, 2, username="alice")
    await fail(rig, 2, username="ghost")
    refusals = []
    for username in ("alice", "ghost"):
        with pytest.raises(AccountLockedError) as raised:
            await rig.login(username)
        refusals.append((raised.value.message, raised.value.retry_after))
    assert refusals[0] == refusals[1]


async def test_failures_are_forgotten_after_the_window(build: Build) -> None:
    rig = build(throttle=limits(per_pair=3, window_s=1))
    await rig.add_user("alice")
    await fail(rig, 2)
    await asyncio.sleep(1.05)  # the counters keep wall time, not the fake clock's
    await fail(rig, 2)
    assert await rig.login()


async def test_wrong_reauthentication_passwords_count_as_failed_logins(build: Build) -> None:
    rig = build(throttle=limits(per_pair=3))
    await rig.add_user("alice")
    grant = await rig.login()
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await rig.service.reauthenticate(grant.session_token, "wrong password", Channel.API, ADDRESS)
    with pytest.raises(AccountLockedError):
        await rig.service.reauthenticate(grant.session_token, PASSWORD, Channel.API, ADDRESS)
    with pytest.raises(AccountLockedError):
        await rig.login()


async def test_wrong_second_factor_codes_count_as_failed_logins(build: Build) -> None:
    # Without this, a stolen password gives unlimited second-factor guesses, a few per challenge.
    rig = build(throttle=limits(per_pair=3), mfa=mfa_everywhere())
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    for _ in range(3):
        challenge_id = await rig.mfa_challenge()
        with pytest.raises(AuthenticationError):
            await rig.service.answer(challenge_id, "totp", "000000")
    with pytest.raises(AccountLockedError):
        await rig.login()
    assert await rig.service.answer(await rig.mfa_challenge(address=HOME), "totp", rig.totp_code(secret))


async def test_a_password_alone_does_not_make_an_address_trusted_while_mfa_is_due(build: Build) -> None:
    rig = build(throttle=limits(per_account=2), mfa=mfa_everywhere())
    await rig.add_user("alice")
    await rig.enroll_totp()
    await rig.mfa_challenge(address="192.0.2.66")  # password right, second factor never given
    await fail(rig, 1, address="192.0.2.1")
    await fail(rig, 1, address="192.0.2.2")
    with pytest.raises(AccountLockedError):
        await rig.login(address="192.0.2.66")


async def test_a_completed_mfa_login_trusts_the_address_and_clears_its_failures(build: Build) -> None:
    rig = build(throttle=limits(per_pair=3, per_account=3), mfa=mfa_everywhere())
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    await fail(rig, 2, address=HOME)
    await rig.service.answer(await rig.mfa_challenge(address=HOME), "totp", rig.totp_code(secret))
    # Two more from home do not lock the pair (its counter was cleared), but the account is now
    # at four failures: locked for new addresses, not for home.
    await fail(rig, 2, address=HOME)
    with pytest.raises(AccountLockedError):
        await rig.login(address="192.0.2.9")
    with pytest.raises(MfaRequiredError) as raised:
        await rig.login(address=HOME)
    assert challenge_of(raised.value)


async def test_throttle_keys_carry_no_raw_username_or_address(build: Build) -> None:
    rig = build(throttle=limits(per_pair=1))
    await rig.add_user("alice")
    await fail(rig, 1)
    await rig.login(address=HOME)
    keys = list(rig.ephemeral._values)  # reading the memory store's keys: what Redis would hold
    assert keys
    assert not any("alice" in key or ADDRESS in key or HOME in key for key in keys)


async def test_a_locked_pair_cannot_keep_guessing_on_an_open_challenge(build: Build) -> None:
    rig = build(throttle=limits(per_pair=2), mfa=mfa_everywhere(max_attempts=5))
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    challenge_id = await rig.mfa_challenge()
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            await rig.service.answer(challenge_id, "totp", "000000")
    with pytest.raises(AccountLockedError):
        await rig.service.answer(challenge_id, "totp", rig.totp_code(secret))


async def test_a_stolen_session_cannot_guess_a_channels_second_factor_over_fresh_challenges(
    build: Build,
) -> None:
    rig = build(throttle=limits(per_pair=3), mfa=mfa_everywhere(session_binding=False))
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    grant = await rig.service.answer(await rig.mfa_challenge(), "totp", rig.totp_code(secret))
    for _ in range(3):
        with pytest.raises(MfaRequiredError) as raised:
            await rig.service.token(grant.session_token, Channel.CLI)
        with pytest.raises(AuthenticationError):
            await rig.service.answer(challenge_of(raised.value), "totp", "000000")
    with pytest.raises(MfaRequiredError) as raised:
        await rig.service.token(grant.session_token, Channel.CLI)
    rig.next_step()
    with pytest.raises(AccountLockedError):
        await rig.service.answer(challenge_of(raised.value), "totp", rig.totp_code(secret))
    # The user's own logins from a known address still work.
    assert await rig.service.answer(await rig.mfa_challenge(), "totp", rig.totp_code(secret))
