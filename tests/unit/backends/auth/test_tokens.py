"""Channel tokens: round trips, every refusal with its reason, key rotation and the public JWK Set."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from nexus.backends.auth.tokens import (
    BAD_ALGORITHM,
    BAD_SIGNATURE,
    EXPIRED,
    MALFORMED,
    MISSING_CLAIM,
    NOT_YET_VALID,
    REQUIRED_CLAIMS,
    UNKNOWN_KEY,
    WRONG_AUDIENCE,
    WRONG_ISSUER,
    JwtCodec,
    generate_signing_key,
    public_jwks,
)
from nexus.core.auth.model import SigningKey
from nexus.errors import AuthenticationError, ConfigurationError
from nexus.testing.clock import FakeClock

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
ISSUER = "https://nexus.test"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def key() -> SigningKey:
    return generate_signing_key(now=T0 - timedelta(days=1))


@pytest.fixture
def codec(key: SigningKey, clock: FakeClock) -> JwtCodec:
    return JwtCodec([key], clock=clock)


def make_claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": "api",
        "sub": "user-1",
        "jti": secrets.token_urlsafe(12),
        "iat": T0,
        "nbf": T0,
        "exp": T0 + timedelta(minutes=5),
        "sid": "session-1",
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """Build a compact JWS by hand, the way an attacker would."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def numeric_claims(**overrides: Any) -> dict[str, Any]:
    claims = make_claims(**overrides)
    for name in ("iat", "nbf", "exp"):
        if isinstance(claims.get(name), datetime):
            claims[name] = int(claims[name].timestamp())
    return claims


def private_key_of(key: SigningKey) -> Any:
    return serialization.load_pem_private_key(key.private_pem.encode(), password=None)


def refusal(codec: JwtCodec, token: str, *, audience: str = "api", issuer: str = ISSUER) -> str:
    with pytest.raises(AuthenticationError) as raised:
        codec.decode(token, audience=audience, issuer=issuer)
    error = raised.value
    # The reason may be shown to anyone; the token (or any piece of it) never is.
    for part in token.split("."):
        if len(part) >= 8:
            assert part not in str(error)
            assert part not in repr(error)
            assert part not in json.dumps(error.to_problem())
    assert error.__cause__ is None
    assert error.__context__ is None
    return error.message


def test_an_eddsa_token_round_trips_with_its_kid(codec: JwtCodec, key: SigningKey) -> None:
    claims = make_claims()

    token = codec.encode(claims)
    decoded = codec.decode(token, audience="api", issuer=ISSUER)

    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": key.kid, "typ": "JWT"}
    assert decoded == {**claims, "iat": 1735732800, "nbf": 1735732800, "exp": 1735733100}
    assert codec.signing_kid == key.kid


def test_an_es256_token_round_trips(clock: FakeClock) -> None:
    key = generate_signing_key("ES256", now=T0)
    codec = JwtCodec([key], clock=clock)

    token = codec.encode(make_claims(sub="user-2"))

    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert codec.decode(token, audience="api", issuer=ISSUER)["sub"] == "user-2"


def test_a_token_for_another_channel_is_refused(codec: JwtCodec) -> None:
    token = codec.encode(make_claims(aud="cli"))

    assert refusal(codec, token, audience="api") == WRONG_AUDIENCE
    assert codec.decode(token, audience="cli", issuer=ISSUER)["aud"] == "cli"


def test_a_token_for_several_audiences_is_refused_everywhere(codec: JwtCodec) -> None:
    token = codec.encode(make_claims(aud=["api", "cli", "mcp"]))

    for channel in ("api", "cli", "mcp"):
        assert refusal(codec, token, audience=channel) == WRONG_AUDIENCE


def test_a_token_from_another_issuer_is_refused(codec: JwtCodec) -> None:
    token = codec.encode(make_claims(iss="https://other.test"))

    assert refusal(codec, token) == WRONG_ISSUER


def test_a_token_expires_at_exp_plus_the_leeway(codec: JwtCodec, clock: FakeClock) -> None:
    token = codec.encode(make_claims())

    clock.advance(5 * 60 + 4)
    assert codec.decode(token, audience="api", issuer=ISSUER)["sub"] == "user-1"
    clock.advance(1)
    assert refusal(codec, token) == "The token has expired."


def test_without_leeway_a_token_is_dead_at_exp(key: SigningKey, clock: FakeClock) -> None:
    codec = JwtCodec([key], clock=clock, leeway=timedelta(0))
    token = codec.encode(make_claims())

    clock.advance(5 * 60 - 1)
    codec.decode(token, audience="api", issuer=ISSUER)
    clock.advance(1)
    assert refusal(codec, token) == EXPIRED


def test_a_token_used_before_nbf_is_refused_until_then(codec: JwtCodec, clock: FakeClock) -> None:
    token = codec.encode(make_claims(nbf=T0 + timedelta(seconds=60)))

    assert refusal(codec, token) == NOT_YET_VALID
    clock.advance(55)
    assert codec.decode(token, audience="api", issuer=ISSUER)["sub"] == "user-1"


def test_a_token_issued_in_the_future_is_refused(codec: JwtCodec) -> None:
    token = codec.encode(make_claims(iat=T0 + timedelta(minutes=1)))

    assert refusal(codec, token) == NOT_YET_VALID


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_token_is_refused(codec: JwtCodec, key: SigningKey, alg: str) -> None:
    token = forge({"alg": alg, "kid": key.kid, "typ": "JWT"}, numeric_claims(), lambda _: b"")

    assert refusal(codec, token) == BAD_ALGORITHM
    assert refusal(codec, token.rstrip(".") + ".") == BAD_ALGORITHM


def _public_secrets(key: SigningKey) -> list[bytes]:
    public_key = private_key_of(key).public_key()
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk_x = public_jwks([key])["keys"][0]["x"].encode()
    return [pem, pem.strip(), raw, jwk_x]


def hmac_sha256(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).digest()


def test_an_hs256_token_keyed_with_the_public_key_is_refused(codec: JwtCodec, key: SigningKey) -> None:
    # Key confusion: the attacker knows the public key and offers it as an HMAC secret.
    for secret in _public_secrets(key):
        token = forge(
            {"alg": "HS256", "kid": key.kid, "typ": "JWT"},
            numeric_claims(),
            functools.partial(hmac_sha256, secret),
        )
        assert refusal(codec, token) == BAD_ALGORITHM


def test_an_rs256_token_under_our_kid_is_refused(codec: JwtCodec, key: SigningKey) -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = forge(
        {"alg": "RS256", "kid": key.kid},
        numeric_claims(),
        lambda data: attacker.sign(data, padding.PKCS1v15(), hashes.SHA256()),
    )

    assert refusal(codec, token) == BAD_ALGORITHM


def test_an_es256_token_under_an_eddsa_kid_is_refused(codec: JwtCodec, key: SigningKey) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(attacker.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    token = forge({"alg": "ES256", "kid": key.kid}, numeric_claims(), sign)

    assert refusal(codec, token) == BAD_ALGORITHM


def test_an_eddsa_token_under_an_es256_kid_is_refused(clock: FakeClock) -> None:
    key = generate_signing_key("ES256", now=T0)
    codec = JwtCodec([key], clock=clock)
    attacker = ed25519.Ed25519PrivateKey.generate()

    token = forge({"alg": "EdDSA", "kid": key.kid}, numeric_claims(), attacker.sign)

    assert refusal(codec, token) == BAD_ALGORITHM


def test_a_token_signed_by_a_foreign_key_with_our_kid_is_refused(codec: JwtCodec, key: SigningKey) -> None:
    foreign = dataclasses.replace(generate_signing_key(now=T0), kid=key.kid)

    token = JwtCodec([foreign]).encode(make_claims())

    assert jwt.get_unverified_header(token)["kid"] == key.kid
    assert refusal(codec, token) == BAD_SIGNATURE


def test_a_key_embedded_in_the_header_is_ignored(codec: JwtCodec, key: SigningKey) -> None:
    attacker = ed25519.Ed25519PrivateKey.generate()
    raw = attacker.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    header = {"alg": "EdDSA", "kid": key.kid, "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}}

    token = forge(header, numeric_claims(), attacker.sign)

    assert refusal(codec, token) == BAD_SIGNATURE


def test_a_token_with_an_unknown_kid_is_refused(codec: JwtCodec) -> None:
    stranger = generate_signing_key(now=T0)

    token = JwtCodec([stranger]).encode(make_claims())

    assert refusal(codec, token) == UNKNOWN_KEY
    assert refusal(codec, token) == "The token was signed by an unknown key."


def test_a_token_without_a_kid_is_malformed(codec: JwtCodec, key: SigningKey) -> None:
    token = jwt.encode(numeric_claims(), private_key_of(key), algorithm="EdDSA")

    assert refusal(codec, token) == MALFORMED


def test_a_tampered_payload_breaks_the_signature(codec: JwtCodec) -> None:
    header, _, signature = codec.encode(make_claims(sub="user-1")).split(".")
    forged_payload = b64url(json.dumps(numeric_claims(sub="admin")).encode())

    assert refusal(codec, f"{header}.{forged_payload}.{signature}") == BAD_SIGNATURE
    assert refusal(codec, f"{header}.{forged_payload}.{signature}") == "The token's signature is invalid."


def test_a_tampered_signature_is_refused(codec: JwtCodec) -> None:
    header, payload, signature = codec.encode(make_claims()).split(".")
    flipped = "A" if signature[0] != "A" else "B"

    assert refusal(codec, f"{header}.{payload}.{flipped}{signature[1:]}") == BAD_SIGNATURE


@pytest.mark.parametrize("missing", REQUIRED_CLAIMS)
def test_a_token_missing_a_required_claim_is_refused(codec: JwtCodec, missing: str) -> None:
    token = codec.encode(make_claims(**{missing: None}))

    assert refusal(codec, token) == MISSING_CLAIM


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "tomorrow"},
        {"exp": True},
        {"nbf": float("nan")},
        {"exp": float("inf")},
        {"sub": 42},
        {"jti": 7},
        {"iat": "now"},
    ],
)
def test_a_signed_token_with_badly_typed_claims_is_malformed(codec: JwtCodec, claims: dict[str, Any]) -> None:
    token = codec.encode(make_claims(**claims))

    assert refusal(codec, token) == MALFORMED


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b", "a.b.c", "...", "eyJhbGciOiJFZERTQSJ9.e30.", "x" * 10_000, "ü.ü.ü"]
)
def test_garbage_is_malformed(codec: JwtCodec, token: str) -> None:
    assert refusal(codec, token) == "The token is malformed."


def test_a_retired_key_verifies_while_in_the_set_and_not_after(
    codec: JwtCodec, key: SigningKey, clock: FakeClock
) -> None:
    old_token = codec.encode(make_claims())
    successor = generate_signing_key(now=T0)
    retired = dataclasses.replace(key, retired_at=T0)

    codec.reload([retired, successor])
    new_token = codec.encode(make_claims())

    assert codec.signing_kid == successor.kid
    assert jwt.get_unverified_header(new_token)["kid"] == successor.kid
    assert codec.decode(old_token, audience="api", issuer=ISSUER)["sub"] == "user-1"
    assert codec.decode(new_token, audience="api", issuer=ISSUER)["sub"] == "user-1"

    codec.reload([successor])

    assert refusal(codec, old_token) == UNKNOWN_KEY
    assert codec.decode(new_token, audience="api", issuer=ISSUER)["sub"] == "user-1"


def test_the_newest_active_key_signs(clock: FakeClock) -> None:
    oldest = generate_signing_key(now=T0 - timedelta(days=3))
    newest_active = generate_signing_key("ES256", now=T0 - timedelta(days=2))
    newer_but_retired = dataclasses.replace(generate_signing_key(now=T0), retired_at=T0)

    codec = JwtCodec([oldest, newer_but_retired, newest_active], clock=clock)

    assert codec.signing_kid == newest_active.kid
    assert jwt.get_unverified_header(codec.encode(make_claims()))["alg"] == "ES256"


def test_a_bad_reload_changes_nothing(codec: JwtCodec, key: SigningKey) -> None:
    token = codec.encode(make_claims())
    broken = dataclasses.replace(generate_signing_key(now=T0), private_pem="not a key")

    with pytest.raises(ConfigurationError):
        codec.reload([broken])

    assert codec.signing_kid == key.kid
    assert codec.decode(token, audience="api", issuer=ISSUER)["sub"] == "user-1"


def test_unusable_key_sets_are_configuration_errors(key: SigningKey) -> None:
    es_pem = generate_signing_key("ES256", now=T0).private_pem
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cases = [
        [],
        [dataclasses.replace(key, retired_at=T0)],
        [key, dataclasses.replace(generate_signing_key(now=T0), kid=key.kid)],
        [dataclasses.replace(key, private_pem=es_pem)],
        [dataclasses.replace(key, algorithm="ES256")],
        [dataclasses.replace(key, algorithm="ES256", private_pem=p384.decode())],
        [dataclasses.replace(key, algorithm="HS256")],
        [dataclasses.replace(key, algorithm="none")],
    ]
    for keys in cases:
        with pytest.raises(ConfigurationError) as raised:
            JwtCodec(keys)
        assert "PRIVATE KEY" not in raised.value.message


def test_generating_an_unsupported_algorithm_is_a_configuration_error() -> None:
    for algorithm in ("RS256", "HS256", "none", "Ed448"):
        with pytest.raises(ConfigurationError):
            generate_signing_key(algorithm, now=T0)


def test_a_generated_key_is_pkcs8_pem_with_a_random_kid() -> None:
    first, second = generate_signing_key(now=T0), generate_signing_key("ES256", now=T0)

    assert first.private_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert second.private_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert first.kid != second.kid
    assert len(first.kid) >= 16
    assert (first.algorithm, second.algorithm) == ("EdDSA", "ES256")
    assert first.created_at == T0
    assert first.retired_at is None


def test_the_jwks_holds_public_parts_only_and_verifies_our_tokens(clock: FakeClock) -> None:
    ed_key, es_key = generate_signing_key(now=T0 - timedelta(days=1)), generate_signing_key("ES256", now=T0)
    retired_ed = dataclasses.replace(ed_key, retired_at=T0)

    jwks = public_jwks([retired_ed, es_key])

    assert [(jwk["kid"], jwk["alg"], jwk["use"]) for jwk in jwks["keys"]] == [
        (ed_key.kid, "EdDSA", "sig"),
        (es_key.kid, "ES256", "sig"),
    ]
    assert set(jwks["keys"][0]) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert set(jwks["keys"][1]) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    text = json.dumps(jwks)
    assert '"d"' not in text
    assert "PRIVATE" not in text
    # An independent verifier (pyjwt's own JWK loader) checks tokens of both keys with it.
    key_set = jwt.PyJWKSet.from_dict(jwks)
    for signing_key in (ed_key, es_key):
        token = JwtCodec([signing_key], clock=clock).encode(make_claims())
        public = key_set[signing_key.kid]
        decoded = jwt.decode(
            token,
            public,
            algorithms=[signing_key.algorithm],
            audience="api",
            issuer=ISSUER,
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
        assert decoded["sub"] == "user-1"


def test_no_private_key_shows_in_a_repr(codec: JwtCodec, key: SigningKey) -> None:
    assert "PRIVATE" not in repr(key)
    assert "PRIVATE" not in repr(codec)
    assert key.kid in repr(codec)


def test_a_negative_leeway_is_a_configuration_error(key: SigningKey) -> None:
    with pytest.raises(ConfigurationError):
        JwtCodec([key], leeway=timedelta(seconds=-1))
