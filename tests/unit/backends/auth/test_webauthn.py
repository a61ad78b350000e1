"""WebAuthn relying party against the software authenticator: real ES256 keys, real signatures."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from nexus.backends.auth.webauthn import (
    RegisteredCredential,
    WebAuthnSettings,
    WebAuthnVerifier,
    credential_id_of,
)
from nexus.errors import AuthenticationError, ConfigurationError
from nexus.testing.webauthn import AuthenticatorError, SoftAuthenticator, decode_base64url, encode_base64url

ORIGIN = "https://nexus.example"
EVIL_ORIGIN = "https://nexus-example.evil"


def make_verifier(user_verification: str = "preferred") -> WebAuthnVerifier:
    return WebAuthnVerifier(
        WebAuthnSettings(
            rp_id="nexus.example",
            rp_name="Nexus",
            origins=(ORIGIN,),
            user_verification=user_verification,  # type: ignore[arg-type]  # str from parametrization
        )
    )


def register(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, existing: tuple[str, ...] = ()
) -> RegisteredCredential:
    options, challenge = verifier.registration_options("user-1", "alice", existing)
    return verifier.verify_registration(key.create(options, ORIGIN), challenge)


def assertion(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> tuple[dict[str, Any], str]:
    options, challenge = verifier.authentication_options([credential.credential_id])
    return key.get(options, ORIGIN), challenge


def verify(
    verifier: WebAuthnVerifier,
    response: dict[str, Any],
    challenge: str,
    credential: RegisteredCredential,
    sign_count: int,
) -> int:
    return verifier.verify_authentication(
        response, challenge, public_key=credential.public_key, sign_count=sign_count
    )


def refusal_reason(excinfo: pytest.ExceptionInfo[AuthenticationError]) -> str:
    return str(excinfo.value.detail["reason"])


def with_response_member(response: dict[str, Any], name: str, value: bytes) -> dict[str, Any]:
    return {**response, "response": {**response["response"], name: encode_base64url(value)}}


@pytest.fixture
def verifier() -> WebAuthnVerifier:
    return make_verifier()


@pytest.fixture
def key() -> SoftAuthenticator:
    return SoftAuthenticator()


@pytest.fixture
def credential(verifier: WebAuthnVerifier, key: SoftAuthenticator) -> RegisteredCredential:
    return register(verifier, key)


def test_registered_key_authenticates_and_returns_its_counter(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    assert credential.credential_id == key.credential_ids[0]
    assert credential.sign_count == 0
    assert credential.transports == ("usb",)
    assert credential.user_verified is True
    response, challenge = assertion(verifier, key, credential)

    new_count = verifier.verify_authentication(
        response, challenge, public_key=credential.public_key, sign_count=credential.sign_count
    )

    assert new_count == 1 == key.sign_count(credential.credential_id)
    assert credential_id_of(response) == credential.credential_id


def test_second_assertion_returns_a_larger_counter(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    first, first_challenge = assertion(verifier, key, credential)
    count = verify(verifier, first, first_challenge, credential, 0)
    second, second_challenge = assertion(verifier, key, credential)

    assert (
        verifier.verify_authentication(
            json.dumps(second), second_challenge, public_key=credential.public_key, sign_count=count
        )
        > count
    )


def test_replayed_assertion_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    response, challenge = assertion(verifier, key, credential)
    count = verify(verifier, response, challenge, credential, 0)

    with pytest.raises(AuthenticationError) as excinfo:
        verify(verifier, response, challenge, credential, count)
    assert refusal_reason(excinfo) == "counter_not_increased"


def test_cloned_key_with_stale_counter_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    clone = key.clone()
    count = 0
    for _ in range(2):
        response, challenge = assertion(verifier, key, credential)
        count = verify(verifier, response, challenge, credential, count)
    cloned_response, challenge = assertion(verifier, clone, credential)

    with pytest.raises(AuthenticationError) as excinfo:
        verify(verifier, cloned_response, challenge, credential, count)
    assert refusal_reason(excinfo) == "counter_not_increased"


def test_key_restored_to_an_old_counter_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    key.set_sign_count(credential.credential_id, 4)
    response, challenge = assertion(verifier, key, credential)

    with pytest.raises(AuthenticationError) as excinfo:
        verify(verifier, response, challenge, credential, 9)
    assert refusal_reason(excinfo) == "counter_not_increased"


def test_key_without_a_counter_is_accepted_while_both_counters_are_zero(verifier: WebAuthnVerifier) -> None:
    key = SoftAuthenticator(counter_step=0)
    credential = register(verifier, key)

    for _ in range(2):
        response, challenge = assertion(verifier, key, credential)
        assert verify(verifier, response, challenge, credential, 0) == 0


def test_assertion_for_another_challenge_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    response, _ = assertion(verifier, key, credential)
    _, other_challenge = verifier.authentication_options([credential.credential_id])

    with pytest.raises(AuthenticationError) as excinfo:
        verify(verifier, response, other_challenge, credential, 0)
    assert refusal_reason(excinfo) == "wrong_challenge"


def test_assertion_from_another_origin_is_refused_without_echoing_it(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    options, challenge = verifier.authentication_options([credential.credential_id])
    response = key.get(options, EVIL_ORIGIN)

    with pytest.raises(AuthenticationError) as excinfo:
        verify(verifier, response, challenge, credential, 0)
    assert refusal_reason(excinfo) == "wrong_origin"
    assert "evil" not in excinfo.value.message
    assert ORIGIN not in excinfo.value.message


def test_assertion_for_another_relying_party_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    options, challenge = verifier.authentication_options([credential.credential_id])
    response = key.get({**options, "rpId": "evil.example"}, ORIGIN)

    with pytest.raises(AuthenticationError) as excinfo:
        verify(verifier, response, challenge, credential, 0)
    assert refusal_reason(excinfo) == "wrong_rp_id"


def test_tampered_signature_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    response, challenge = assertion(verifier, key, credential)
    signature = bytearray(decode_base64url(response["response"]["signature"]))
    signature[-1] ^= 0x01
    tampered = with_response_member(response, "signature", bytes(signature))

    with pytest.raises(AuthenticationError) as excinfo:
        verify(verifier, tampered, challenge, credential, 0)
    assert refusal_reason(excinfo) == "bad_signature"


def test_signature_by_another_key_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    other = register(verifier, SoftAuthenticator())
    response, challenge = assertion(verifier, key, credential)

    with pytest.raises(AuthenticationError) as excinfo:
        verifier.verify_authentication(response, challenge, public_key=other.public_key, sign_count=0)
    assert refusal_reason(excinfo) == "bad_signature"


def test_authenticator_data_with_an_inflated_counter_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    response, challenge = assertion(verifier, key, credential)
    auth_data = bytearray(decode_base64url(response["response"]["authenticatorData"]))
    auth_data[33:37] = (1000).to_bytes(4, "big")
    tampered = with_response_member(response, "authenticatorData", bytes(auth_data))

    with pytest.raises(AuthenticationError) as excinfo:
        verify(verifier, tampered, challenge, credential, 0)
    assert refusal_reason(excinfo) == "bad_signature"


def test_truncated_authenticator_data_is_refused_as_malformed(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    response, challenge = assertion(verifier, key, credential)
    auth_data = decode_base64url(response["response"]["authenticatorData"])
    tampered = with_response_member(response, "authenticatorData", auth_data[:20])

    with pytest.raises(AuthenticationError) as excinfo:
        verify(verifier, tampered, challenge, credential, 0)
    assert refusal_reason(excinfo) == "malformed_response"


@pytest.mark.parametrize("response", ["not json", "[]", {"id": "x"}])
def test_garbage_response_is_refused_as_malformed(verifier: WebAuthnVerifier, response: Any) -> None:
    _, challenge = verifier.authentication_options([])

    with pytest.raises(AuthenticationError) as excinfo:
        verifier.verify_authentication(response, challenge, public_key="AA", sign_count=0)
    assert refusal_reason(excinfo) == "malformed_response"


def test_registration_answering_another_challenge_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator
) -> None:
    options, _ = verifier.registration_options("user-1", "alice", [])
    _, other_challenge = verifier.registration_options("user-1", "alice", [])

    with pytest.raises(AuthenticationError) as excinfo:
        verifier.verify_registration(key.create(options, ORIGIN), other_challenge)
    assert refusal_reason(excinfo) == "wrong_challenge"


def test_registration_from_another_origin_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator
) -> None:
    options, challenge = verifier.registration_options("user-1", "alice", [])

    with pytest.raises(AuthenticationError) as excinfo:
        verifier.verify_registration(key.create(options, EVIL_ORIGIN), challenge)
    assert refusal_reason(excinfo) == "wrong_origin"


def test_registration_for_another_relying_party_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator
) -> None:
    options, challenge = verifier.registration_options("user-1", "alice", [])
    forged = {**options, "rp": {**options["rp"], "id": "evil.example"}}

    with pytest.raises(AuthenticationError) as excinfo:
        verifier.verify_registration(key.create(forged, ORIGIN), challenge)
    assert refusal_reason(excinfo) == "wrong_rp_id"


def test_assertion_answered_to_registration_is_refused(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    options, challenge = verifier.authentication_options([credential.credential_id])
    response = key.get(options, ORIGIN)
    # An assertion's client data, grafted onto a registration response, names the wrong ceremony.
    registration = key.clone().create(verifier.registration_options("user-1", "alice", [])[0], ORIGIN)
    grafted = {
        **registration,
        "response": {**registration["response"], "clientDataJSON": response["response"]["clientDataJSON"]},
    }

    with pytest.raises(AuthenticationError) as excinfo:
        verifier.verify_registration(grafted, challenge)
    assert refusal_reason(excinfo) == "wrong_ceremony"


def test_required_user_verification_refuses_a_key_that_cannot_verify(
    key: SoftAuthenticator,
) -> None:
    verifier = make_verifier("required")
    options, challenge = verifier.registration_options("user-1", "alice", [])
    assert options["authenticatorSelection"]["userVerification"] == "required"

    with pytest.raises(AuthenticationError) as excinfo:
        verifier.verify_registration(
            SoftAuthenticator(user_verification=False).create(options, ORIGIN), challenge
        )
    assert refusal_reason(excinfo) == "user_not_verified"

    credential = register(verifier, key)
    key.user_verification = False
    response, challenge = assertion(verifier, key, credential)
    with pytest.raises(AuthenticationError) as excinfo:
        verify(verifier, response, challenge, credential, 0)
    assert refusal_reason(excinfo) == "user_not_verified"


def test_preferred_user_verification_accepts_a_key_that_cannot_verify(verifier: WebAuthnVerifier) -> None:
    key = SoftAuthenticator(user_verification=False)
    credential = register(verifier, key)
    response, challenge = assertion(verifier, key, credential)

    assert credential.user_verified is False
    assert verify(verifier, response, challenge, credential, 0) == 1


def test_registration_options_exclude_existing_keys(
    verifier: WebAuthnVerifier, key: SoftAuthenticator, credential: RegisteredCredential
) -> None:
    options, challenge = verifier.registration_options("user-1", "alice", [credential.credential_id])

    assert [item["id"] for item in options["excludeCredentials"]] == [credential.credential_id]
    assert options["attestation"] == "none"
    assert options["rp"] == {"id": "nexus.example", "name": "Nexus"}
    assert options["challenge"] == challenge
    assert len(decode_base64url(challenge)) >= 16
    assert base64.urlsafe_b64decode(options["user"]["id"] + "==") == b"user-1"
    with pytest.raises(AuthenticatorError):
        key.create(options, ORIGIN)
    assert register(verifier, SoftAuthenticator(), (credential.credential_id,)).credential_id != (
        credential.credential_id
    )


def test_authentication_options_allow_only_the_given_keys(
    verifier: WebAuthnVerifier, credential: RegisteredCredential
) -> None:
    options, challenge = verifier.authentication_options([credential.credential_id])

    assert options["allowCredentials"] == [{"id": credential.credential_id, "type": "public-key"}]
    assert options["rpId"] == "nexus.example"
    assert options["userVerification"] == "preferred"
    assert options["timeout"] == 60_000
    assert options["challenge"] == challenge
    assert challenge != verifier.authentication_options([credential.credential_id])[1]


def test_registered_credential_repr_hides_the_public_key(credential: RegisteredCredential) -> None:
    assert credential.public_key not in repr(credential)


def test_single_origin_string_is_accepted_as_one_origin() -> None:
    settings = WebAuthnSettings(rp_id="localhost", rp_name="Dev", origins="http://localhost:8000")  # type: ignore[arg-type]  # str on purpose

    assert settings.origins == ("http://localhost:8000",)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"rp_id": "https://nexus.example"}, "rp_id"),
        ({"rp_id": "Nexus.Example"}, "rp_id"),
        ({"rp_id": "127.0.0.1", "origins": ("https://127.0.0.1",)}, "IP address"),
        ({"rp_name": " "}, "rp_name"),
        ({"origins": ()}, "origin"),
        ({"origins": ("http://nexus.example",)}, "https"),
        ({"origins": ("https://nexus.example/login",)}, "scheme://host"),
        ({"origins": ("https://example.org",)}, "not within"),
        ({"origins": ("https://notnexus.example",)}, "not within"),
        ({"user_verification": "always"}, "user_verification"),
        ({"timeout_ms": 0}, "timeout_ms"),
    ],
)
def test_invalid_settings_are_refused(changes: dict[str, Any], fragment: str) -> None:
    fields: dict[str, Any] = {"rp_id": "nexus.example", "rp_name": "Nexus", "origins": (ORIGIN,), **changes}

    with pytest.raises(ConfigurationError, match=fragment):
        WebAuthnSettings(**fields)


def test_subdomain_origin_is_within_the_relying_party() -> None:
    settings = WebAuthnSettings(
        rp_id="nexus.example", rp_name="Nexus", origins=("https://login.nexus.example:8443", ORIGIN)
    )

    assert len(settings.origins) == 2
