"""IdentityService second factors: when one is due, TOTP, SMS, hardware keys, enrollment and challenges.

Real adapters on memory stores (pyotp computes codes at the fake clock's time; a software FIDO2 key
answers WebAuthn); time moves only through the fake clock.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

import pytest
from tests.unit.core.auth.rig import (
    ORIGIN,
    PHONE,
    IdentityRig,
    challenge_of,
    mfa_everywhere,
)

from nexus.core.auth.model import FactorKind
from nexus.core.auth.policy import MfaPolicy
from nexus.core.types import Channel
from nexus.errors import (
    AuthenticationError,
    InvalidInputError,
    MfaEnrollmentRequiredError,
    MfaRequiredError,
)
from nexus.testing.webauthn import SoftAuthenticator

Build = Callable[..., IdentityRig]
CHALLENGE_GONE = "The login challenge is unknown, used up or expired; log in again."


# -- when a second factor is due -----------------------------------------------------------------


async def test_mfa_is_due_only_on_the_channels_it_is_required_for(build: Build) -> None:
    rig = build(mfa=MfaPolicy(methods=frozenset({FactorKind.TOTP}), required_for=frozenset({Channel.CLI})))
    await rig.add_user("alice")
    grant = await rig.login(channel=Channel.API)
    assert grant.session.mfa_channels == frozenset()
    with pytest.raises(MfaEnrollmentRequiredError):
        await rig.login(channel=Channel.CLI)


async def test_roles_in_bypass_roles_skip_the_second_factor(build: Build) -> None:
    rig = build(mfa=mfa_everywhere(bypass_roles=frozenset({"robot"})))
    await rig.add_user("r2", roles=["robot", "viewer"])
    await rig.add_user("alice", roles=["viewer"])
    grant = await rig.login("r2", channel=Channel.MCP)
    assert (await rig.service.authenticate(grant.access.token, Channel.MCP)).id == grant.session.user_id
    with pytest.raises(MfaEnrollmentRequiredError):
        await rig.login("alice", channel=Channel.MCP)


async def test_no_factor_enrolled_asks_for_enrollment_naming_the_methods(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    with pytest.raises(MfaEnrollmentRequiredError) as raised:
        await rig.login()
    assert raised.value.detail["methods"] == ["hardware_key", "sms", "totp"]
    owner = await rig.service.challenge_owner(challenge_of(raised.value))
    assert owner == (await rig.stored_user("alice")).user_id


async def test_an_enrolled_factor_turns_the_login_into_an_mfa_challenge(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    await rig.enroll_totp()
    with pytest.raises(MfaRequiredError) as raised:
        await rig.login()
    assert raised.value.detail["methods"] == ["recovery", "totp"]


async def test_a_password_failure_does_not_reveal_whether_mfa_is_due(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    with pytest.raises(AuthenticationError) as raised:
        await rig.login(password="wrong password")
    assert type(raised.value) is AuthenticationError
    assert "challenge_id" not in raised.value.detail


# -- TOTP ----------------------------------------------------------------------------------------


async def test_totp_enrollment_gives_a_provisioning_uri_and_ten_recovery_codes(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    challenge_id = await rig.enrollment_challenge()
    enrollment = await rig.service.enroll(challenge_id, "totp")
    secret = enrollment.details["secret"]
    assert enrollment.kind is FactorKind.TOTP
    assert enrollment.details["provisioning_uri"].startswith("otpauth://totp/")
    assert f"secret={secret}" in enrollment.details["provisioning_uri"]

    grant, codes = await rig.service.activate(challenge_id, rig.totp_code(secret))

    assert grant.session.mfa_time == rig.clock.now()
    assert len(codes) == len(set(codes)) == 10
    assert all(re.fullmatch(r"[2-9a-z]{4}-[2-9a-z]{4}-[2-9a-z]{4}", code) for code in codes)
    stored = await rig.factors.for_user(grant.session.user_id)
    assert {f.kind for f in stored} == {FactorKind.TOTP, FactorKind.RECOVERY}
    assert all(f.active for f in stored)
    assert not any(code in f.secret for f in stored for code in codes)


async def test_activation_with_wrong_codes_counts_attempts_until_the_challenge_dies(build: Build) -> None:
    rig = build(mfa=mfa_everywhere(max_attempts=3))
    await rig.add_user("alice")
    challenge_id = await rig.enrollment_challenge()
    secret = (await rig.service.enroll(challenge_id, "totp")).details["secret"]
    wrong = f"{(int(rig.totp_code(secret)) + 1) % 1_000_000:06d}"
    for _ in range(2):
        with pytest.raises(AuthenticationError) as raised:
            await rig.service.activate(challenge_id, wrong)
        assert raised.value.detail["challenge_id"] == challenge_id
    with pytest.raises(AuthenticationError, match="Too many wrong codes") as last:
        await rig.service.activate(challenge_id, wrong)
    assert "challenge_id" not in last.value.detail
    with pytest.raises(AuthenticationError, match=re.escape(CHALLENGE_GONE)):
        await rig.service.activate(challenge_id, rig.totp_code(secret))
    factors = await rig.factors.for_user((await rig.stored_user("alice")).user_id)
    assert not any(f.active for f in factors)


async def test_a_totp_code_is_accepted_once_and_an_older_step_is_refused_after_it(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    previous, current = rig.totp_code(secret, steps=-1), rig.totp_code(secret)

    grant = await rig.service.answer(await rig.mfa_challenge(), "totp", current)
    assert grant.session.mfa_channels == frozenset(Channel)

    challenge_id = await rig.mfa_challenge()
    with pytest.raises(AuthenticationError, match="already used"):
        await rig.service.answer(challenge_id, "totp", current)
    with pytest.raises(AuthenticationError, match="already used"):
        await rig.service.answer(challenge_id, "totp", previous)
    rig.next_step()
    assert (await rig.service.answer(challenge_id, "totp", rig.totp_code(secret))).session.user_id


async def test_a_totp_code_within_one_step_of_drift_is_accepted_and_two_steps_is_not(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    rig.clock.advance(120)
    challenge_id = await rig.mfa_challenge()
    with pytest.raises(AuthenticationError):
        await rig.service.answer(challenge_id, "totp", rig.totp_code(secret, steps=2))
    assert await rig.service.answer(challenge_id, "totp", rig.totp_code(secret, steps=1))


async def test_a_recovery_code_works_once(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    _, codes = await rig.enroll_totp()

    grant = await rig.service.answer(await rig.mfa_challenge(), "recovery", codes[0])
    assert grant.session.mfa_time == rig.clock.now()

    challenge_id = await rig.mfa_challenge()
    with pytest.raises(AuthenticationError):
        await rig.service.answer(challenge_id, "recovery", codes[0])
    # Typed loosely (upper case, spaces) another code still works.
    assert await rig.service.answer(challenge_id, "recovery", f"  {codes[1].upper().replace('-', ' ')} ")


async def test_an_unknown_method_is_invalid_input_and_leaves_the_challenge_usable(build: Build) -> None:
    rig = build(mfa=MfaPolicy(methods=frozenset({FactorKind.TOTP}), required_for=frozenset(Channel)))
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    challenge_id = await rig.mfa_challenge()
    for method in ("carrier-pigeon", "sms"):
        with pytest.raises(InvalidInputError, match="recovery, totp"):
            await rig.service.answer(challenge_id, method, "123456")
    assert await rig.service.answer(challenge_id, "totp", rig.totp_code(secret))


# -- SMS -----------------------------------------------------------------------------------------


async def test_sms_enrollment_texts_a_code_to_the_phone_and_activating_with_it_logs_in(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    challenge_id = await rig.enrollment_challenge()
    enrollment = await rig.service.enroll(challenge_id, "sms", phone=PHONE)
    assert enrollment.details == {"phone": "+*********67"}
    code = rig.sink.last_code(PHONE)
    assert code is not None
    grant, codes = await rig.service.activate(challenge_id, code)
    assert len(codes) == 10
    assert grant.session.mfa_time is not None


@pytest.mark.parametrize("phone", [None, "", "555-1234", "+1 555 123 4567", "12345"])
async def test_sms_enrollment_needs_an_international_number(build: Build, phone: str | None) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    challenge_id = await rig.enrollment_challenge()
    with pytest.raises(InvalidInputError, match="international form"):
        await rig.service.enroll(challenge_id, "sms", phone=phone)
    assert rig.sink.messages == ()


async def test_send_sms_code_texts_six_digits_to_the_enrolled_phone_and_the_code_works_once(
    build: Build,
) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    await rig.enroll_sms()
    challenge_id = await rig.mfa_challenge()

    assert await rig.service.send_sms_code(challenge_id) == "+*********67"
    code = rig.sink.last_code(PHONE)
    assert code is not None
    assert re.fullmatch(r"[0-9]{6}", code)
    assert await rig.service.answer(challenge_id, "sms", code)

    with pytest.raises(AuthenticationError, match=re.escape(CHALLENGE_GONE)):
        await rig.service.answer(challenge_id, "sms", code)
    other = await rig.mfa_challenge()
    with pytest.raises(AuthenticationError, match="wrong, expired or already used"):
        await rig.service.answer(other, "sms", code)


async def test_an_sms_code_expires_after_its_ttl(build: Build) -> None:
    rig = build(mfa=mfa_everywhere(sms_code_ttl_s=60, challenge_ttl_s=600))
    await rig.add_user("alice")
    await rig.enroll_sms()
    challenge_id = await rig.mfa_challenge()
    await rig.service.send_sms_code(challenge_id)
    code = rig.sink.last_code(PHONE)
    assert code is not None
    rig.clock.advance(61)
    with pytest.raises(AuthenticationError, match="expired") as raised:
        await rig.service.answer(challenge_id, "sms", code)
    assert raised.value.detail["challenge_id"] == challenge_id


async def test_a_wrong_sms_code_burns_the_one_sent(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    await rig.enroll_sms()
    challenge_id = await rig.mfa_challenge()
    await rig.service.send_sms_code(challenge_id)
    code = rig.sink.last_code(PHONE)
    assert code is not None
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    with pytest.raises(AuthenticationError):
        await rig.service.answer(challenge_id, "sms", wrong)
    with pytest.raises(AuthenticationError):
        await rig.service.answer(challenge_id, "sms", code)
    # A new code for the same challenge works.
    await rig.service.send_sms_code(challenge_id)
    fresh = rig.sink.last_code(PHONE)
    assert fresh is not None
    assert await rig.service.answer(challenge_id, "sms", fresh)


async def test_the_sms_text_states_the_configured_lifetime(build: Build) -> None:
    rig = build(mfa=mfa_everywhere(sms_code_ttl_s=120))
    await rig.add_user("alice")
    await rig.enroll_sms()
    await rig.service.send_sms_code(await rig.mfa_challenge())
    assert "2 minutes" in rig.sink.messages_to(PHONE)[-1]


async def test_codes_sent_per_challenge_are_bounded(build: Build) -> None:
    rig = build(mfa=mfa_everywhere(max_attempts=3))
    await rig.add_user("alice")
    await rig.enroll_sms()
    challenge_id = await rig.mfa_challenge()
    sent_before = len(rig.sink.messages)
    for _ in range(3):
        await rig.service.send_sms_code(challenge_id)
    with pytest.raises(AuthenticationError, match="Too many codes"):
        await rig.service.send_sms_code(challenge_id)
    assert len(rig.sink.messages) == sent_before + 3


async def test_send_sms_code_without_an_sms_factor_is_invalid_and_keeps_the_challenge(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    challenge_id = await rig.mfa_challenge()
    with pytest.raises(InvalidInputError, match="text-message"):
        await rig.service.send_sms_code(challenge_id)
    assert await rig.service.answer(challenge_id, "totp", rig.totp_code(secret))


# -- hardware keys -------------------------------------------------------------------------------


async def test_a_registered_hardware_key_answers_the_login_challenge(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    key = SoftAuthenticator()
    codes = await rig.enroll_key(key)
    assert len(codes) == 10
    user = await rig.service.get_user("alice")
    assert user is not None
    stored = [f for f in await rig.factors.for_user(user.user_id) if f.kind is FactorKind.HARDWARE_KEY]
    assert [f.credential_id for f in stored] == list(key.credential_ids)

    challenge_id = await rig.mfa_challenge()
    grant = await rig.answer_with_key(challenge_id, key)

    assert grant.session.user_id == user.user_id
    assert grant.session.mfa_time == rig.clock.now()
    [after] = [f for f in await rig.factors.for_user(user.user_id) if f.kind is FactorKind.HARDWARE_KEY]
    assert after.sign_count == key.sign_count(key.credential_ids[0]) == 1


async def test_a_cloned_key_with_a_stale_counter_is_refused(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    key = SoftAuthenticator()
    await rig.enroll_key(key)
    clone = key.clone()
    await rig.answer_with_key(await rig.mfa_challenge(), key)

    with pytest.raises(AuthenticationError, match="wrong, expired or already used"):
        await rig.answer_with_key(await rig.mfa_challenge(), clone)
    assert await rig.answer_with_key(await rig.mfa_challenge(), key)


async def test_a_key_response_without_fresh_options_is_refused(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    key = SoftAuthenticator()
    await rig.enroll_key(key)
    first = await rig.mfa_challenge()
    response = key.get(await rig.service.hardware_key_options(first), ORIGIN)
    second = await rig.mfa_challenge()
    with pytest.raises(AuthenticationError):
        # Options were asked for another challenge: this one has no WebAuthn challenge to check against.
        await rig.service.answer(second, "hardware_key", response)
    with pytest.raises(AuthenticationError):
        await rig.service.answer(first, "hardware_key", "not a response")


async def test_an_enrollment_from_another_origin_is_refused(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    challenge_id = await rig.enrollment_challenge()
    enrollment = await rig.service.enroll(challenge_id, "hardware_key")
    phished = SoftAuthenticator().create(enrollment.details["options"], "https://nexus-example.evil")
    with pytest.raises(AuthenticationError):
        await rig.service.activate(challenge_id, phished)
    user = await rig.service.get_user("alice")
    assert user is not None
    assert await rig.factors.for_user(user.user_id) == []


async def test_hardware_key_options_without_a_key_is_invalid(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    await rig.enroll_totp()
    with pytest.raises(InvalidInputError, match="hardware key"):
        await rig.service.hardware_key_options(await rig.mfa_challenge())


# -- challenges ----------------------------------------------------------------------------------


@pytest.mark.parametrize("challenge_id", ["", "short", "x" * 65, secrets.token_urlsafe(24), 42])
async def test_unknown_challenge_ids_are_refused(build: Build, challenge_id: object) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    await rig.enroll_totp()
    await rig.mfa_challenge()
    with pytest.raises(AuthenticationError, match=re.escape(CHALLENGE_GONE)):
        await rig.service.answer(challenge_id, "totp", "123456")  # type: ignore[arg-type]  # bad input on purpose
    assert await rig.service.challenge_owner(challenge_id) is None


async def test_a_used_challenge_is_refused(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    _, codes = await rig.enroll_totp()
    challenge_id = await rig.mfa_challenge()
    await rig.service.answer(challenge_id, "recovery", codes[0])
    with pytest.raises(AuthenticationError, match=re.escape(CHALLENGE_GONE)):
        await rig.service.answer(challenge_id, "recovery", codes[1])


async def test_a_challenge_expires_with_its_ttl(build: Build) -> None:
    rig = build(mfa=mfa_everywhere(challenge_ttl_s=120))
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    challenge_id = await rig.mfa_challenge()
    rig.clock.advance(121)
    with pytest.raises(AuthenticationError, match=re.escape(CHALLENGE_GONE)):
        await rig.service.answer(challenge_id, "totp", rig.totp_code(secret))


async def test_wrong_answers_do_not_extend_a_challenge_beyond_its_ttl(build: Build) -> None:
    rig = build(mfa=mfa_everywhere(challenge_ttl_s=120))
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    challenge_id = await rig.mfa_challenge()
    rig.clock.advance(100)
    with pytest.raises(AuthenticationError):
        await rig.service.answer(challenge_id, "totp", "000000")
    rig.clock.advance(21)
    with pytest.raises(AuthenticationError, match=re.escape(CHALLENGE_GONE)):
        await rig.service.answer(challenge_id, "totp", rig.totp_code(secret))


async def test_asking_for_codes_does_not_extend_a_challenge_beyond_its_ttl(build: Build) -> None:
    rig = build(mfa=mfa_everywhere(challenge_ttl_s=120, sms_code_ttl_s=120))
    await rig.add_user("alice")
    await rig.enroll_sms()
    challenge_id = await rig.mfa_challenge()
    rig.clock.advance(100)
    await rig.service.send_sms_code(challenge_id)
    code = rig.sink.last_code(PHONE)
    assert code is not None
    rig.clock.advance(21)
    with pytest.raises(AuthenticationError, match=re.escape(CHALLENGE_GONE)):
        await rig.service.answer(challenge_id, "sms", code)


async def test_wrong_second_factors_end_the_challenge_after_max_attempts(build: Build) -> None:
    rig = build(mfa=mfa_everywhere(max_attempts=2))
    await rig.add_user("alice")
    _, codes = await rig.enroll_totp()
    challenge_id = await rig.mfa_challenge()
    with pytest.raises(AuthenticationError) as first:
        await rig.service.answer(challenge_id, "totp", "000000")
    assert first.value.detail["challenge_id"] == challenge_id
    with pytest.raises(AuthenticationError, match="Too many wrong codes"):
        await rig.service.answer(challenge_id, "recovery", "2222-2222-2222")
    with pytest.raises(AuthenticationError, match=re.escape(CHALLENGE_GONE)):
        await rig.service.answer(challenge_id, "recovery", codes[0])


async def test_a_disabled_user_cannot_finish_a_pending_challenge(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    _, codes = await rig.enroll_totp()
    challenge_id = await rig.mfa_challenge()
    await rig.service.update_user("alice", disabled=True)
    with pytest.raises(AuthenticationError, match=re.escape(CHALLENGE_GONE)):
        await rig.service.answer(challenge_id, "recovery", codes[0])


async def test_enrolling_a_new_factor_is_refused_when_one_is_already_active(build: Build) -> None:
    # Otherwise a stolen password alone would pass MFA: enroll the thief's app, activate, done.
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    challenge_id = await rig.mfa_challenge()
    for method in ("totp", "hardware_key"):
        with pytest.raises(InvalidInputError, match="already has a second factor"):
            await rig.service.enroll(challenge_id, method)
    with pytest.raises(InvalidInputError, match="already has a second factor"):
        await rig.service.enroll(challenge_id, "sms", phone=PHONE)
    assert rig.sink.messages_to(PHONE) == []
    assert await rig.service.answer(challenge_id, "totp", rig.totp_code(secret))


async def test_answering_an_enrollment_challenge_keeps_it_for_activation(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    challenge_id = await rig.enrollment_challenge()
    secret = (await rig.service.enroll(challenge_id, "totp")).details["secret"]
    with pytest.raises(InvalidInputError, match="Activate"):
        await rig.service.answer(challenge_id, "totp", rig.totp_code(secret))
    grant, _ = await rig.service.activate(challenge_id, rig.totp_code(secret))
    assert grant.session.mfa_time is not None


async def test_activating_a_challenge_without_an_enrollment_keeps_it_for_answering(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    secret, _ = await rig.enroll_totp()
    challenge_id = await rig.mfa_challenge()
    with pytest.raises(InvalidInputError, match="Enroll"):
        await rig.service.activate(challenge_id, rig.totp_code(secret))
    assert await rig.service.answer(challenge_id, "totp", rig.totp_code(secret))


async def test_enroll_refuses_methods_the_policy_does_not_accept(build: Build) -> None:
    rig = build(mfa=MfaPolicy(methods=frozenset({FactorKind.TOTP}), required_for=frozenset(Channel)))
    await rig.add_user("alice")
    challenge_id = await rig.enrollment_challenge()
    for method in ("sms", "recovery", "nope"):
        with pytest.raises(InvalidInputError, match="must be one of: totp"):
            await rig.service.enroll(challenge_id, method, phone=PHONE)
    assert (await rig.service.enroll(challenge_id, "totp")).kind is FactorKind.TOTP


async def test_a_key_that_was_never_registered_is_refused(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    await rig.enroll_key(SoftAuthenticator())
    stranger = SoftAuthenticator()
    stranger.create(rig.hardware.registration_options("local:m", "mallory", [])[0], ORIGIN)
    challenge_id = await rig.mfa_challenge()
    options = await rig.service.hardware_key_options(challenge_id)
    response = stranger.get({**options, "allowCredentials": []}, ORIGIN)  # signs with its own key
    with pytest.raises(AuthenticationError, match="wrong, expired or already used"):
        await rig.service.answer(challenge_id, "hardware_key", response)


async def test_a_disabled_user_cannot_finish_an_enrollment(build: Build) -> None:
    rig = build(mfa=mfa_everywhere())
    await rig.add_user("alice")
    challenge_id = await rig.enrollment_challenge()
    secret = (await rig.service.enroll(challenge_id, "totp")).details["secret"]
    await rig.service.update_user("alice", disabled=True)
    with pytest.raises(AuthenticationError, match=re.escape(CHALLENGE_GONE)):
        await rig.service.activate(challenge_id, rig.totp_code(secret))
    user = await rig.service.get_user("alice")
    assert user is not None
    assert not any(f.active for f in await rig.factors.for_user(user.user_id))
