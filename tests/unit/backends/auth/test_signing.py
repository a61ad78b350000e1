"""Token signing keys: generated once, rotated with the old ones verifying until their tokens
expire, an optional key file that signs, and refresh picking up a rotation made elsewhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from nexus.backends.auth.signing import SigningKeys, load_key_file
from nexus.backends.memory import MemorySigningKeyStore
from nexus.errors import AuthenticationError, ConfigurationError
from nexus.testing.clock import FakeClock

TOKEN_LIFE = timedelta(seconds=900)


def claims(clock: FakeClock) -> dict[str, object]:
    now = int(clock.now().timestamp())
    return {"iss": "nexus", "sub": "u", "aud": "api", "iat": now, "nbf": now, "exp": now + 900, "jti": "j"}


def keys_on(store: MemorySigningKeyStore, clock: FakeClock, key_file: str | None = None) -> SigningKeys:
    return SigningKeys(
        store, clock, key_file=key_file, verify_retired_for=TOKEN_LIFE, leeway=timedelta(seconds=5)
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 1, tzinfo=UTC))


async def test_the_first_start_generates_one_key_and_later_starts_reuse_it(clock: FakeClock) -> None:
    store = MemorySigningKeyStore()
    first = await keys_on(store, clock).open()
    second = await keys_on(store, clock).open()
    assert len(await store.list()) == 1
    token = first.encode(claims(clock))
    assert second.decode(token, audience="api", issuer="nexus")["sub"] == "u"


async def test_rotation_signs_with_the_new_key_and_old_tokens_verify_until_they_expire(
    clock: FakeClock,
) -> None:
    store = MemorySigningKeyStore()
    keys = keys_on(store, clock)
    codec = await keys.open()
    old_kid = codec.signing_kid
    before = codec.encode(claims(clock))
    fresh = await keys.rotate()
    assert codec.signing_kid == fresh.kid != old_kid
    assert {k["kid"] for k in keys.jwks()["keys"]} == {old_kid, fresh.kid}
    assert codec.decode(before, audience="api", issuer="nexus")["sub"] == "u"
    clock.advance(TOKEN_LIFE.total_seconds() + 10)
    await keys.refresh()
    assert {k["kid"] for k in keys.jwks()["keys"]} == {fresh.kid}  # nothing it signed can be live
    with pytest.raises(AuthenticationError, match="unknown key"):
        codec.decode(before, audience="api", issuer="nexus")


async def test_a_node_picks_up_a_rotation_made_by_another_at_its_next_refresh(clock: FakeClock) -> None:
    store = MemorySigningKeyStore()
    here, there = keys_on(store, clock), keys_on(store, clock)
    codec_here, codec_there = await here.open(), await there.open()
    await there.rotate(algorithm="ES256")
    token = codec_there.encode(claims(clock))
    with pytest.raises(AuthenticationError, match="unknown key"):
        codec_here.decode(token, audience="api", issuer="nexus")
    await here.refresh()
    assert codec_here.decode(token, audience="api", issuer="nexus")["sub"] == "u"
    assert codec_here.signing_kid == codec_there.signing_kid


def _pem(key: object, path: Path) -> str:
    data = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(data)
    return str(path)


async def test_a_key_file_signs_and_stored_keys_only_verify_what_they_signed(
    clock: FakeClock, tmp_path: Path
) -> None:
    store = MemorySigningKeyStore()
    stored = await keys_on(store, clock).open()
    earlier = stored.encode(claims(clock))
    key_file = _pem(ed25519.Ed25519PrivateKey.generate(), tmp_path / "signing.pem")
    keys = keys_on(store, clock, key_file)
    codec = await keys.open()
    assert codec.signing_kid.startswith("file-")
    assert codec.signing_kid == load_key_file(key_file, clock).kid  # stable: a hash of the public key
    assert codec.decode(codec.encode(claims(clock)), audience="api", issuer="nexus")["sub"] == "u"
    assert codec.decode(earlier, audience="api", issuer="nexus")["sub"] == "u"
    assert len(await store.list()) == 1  # no key generated when a file gives one


async def test_a_p256_key_file_signs_es256(clock: FakeClock, tmp_path: Path) -> None:
    key_file = _pem(ec.generate_private_key(ec.SECP256R1()), tmp_path / "p256.pem")
    assert load_key_file(key_file, clock).algorithm == "ES256"


@pytest.mark.parametrize("kind", ["rsa", "garbage", "missing", "p384"])
def test_a_key_file_that_cannot_sign_is_a_configuration_error(
    kind: str, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "key.pem"
    if kind == "rsa":
        _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), path)
    elif kind == "p384":
        _pem(ec.generate_private_key(ec.SECP384R1()), path)
    elif kind == "garbage":
        path.write_text("not a key")
    with pytest.raises(ConfigurationError, match="signing_key_file"):
        load_key_file(str(path), clock)
