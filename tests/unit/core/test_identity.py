"""Identity: the API key format, the hash check, revocation and the positive cache's time bound."""

from __future__ import annotations

import pytest

from nexus.backends.memory import MemoryKeyStore
from nexus.core.identity import (
    AnonymousAuthenticator,
    ApiKeyAuthenticator,
    IssuedKey,
    hash_secret,
    new_api_key,
    parse_api_key,
)
from nexus.core.types import ANONYMOUS, Channel, Credential
from nexus.errors import AuthenticationError, ConfigurationError
from nexus.testing.clock import FakeClock

TTL_S = 5.0


def bearer(secret: str) -> Credential:
    return Credential("bearer", secret)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keys() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
async def issued(keys: MemoryKeyStore, clock: FakeClock) -> IssuedKey:
    key = new_api_key("reporting", ["analyst", "viewer"], clock)
    await keys.add(key.key)
    return key


@pytest.fixture
def authenticator(keys: MemoryKeyStore, clock: FakeClock) -> ApiKeyAuthenticator:
    return ApiKeyAuthenticator(keys, clock, cache_ttl_s=TTL_S)


# -- format ------------------------------------------------------------------------------------------


def test_issued_plaintext_parses_back_to_the_key_id_and_a_secret_matching_the_stored_hash(
    clock: FakeClock,
) -> None:
    issued = new_api_key("ci", [], clock)
    parsed = parse_api_key(issued.plaintext)
    assert parsed is not None
    key_id, secret = parsed
    assert key_id == issued.key.key_id
    assert hash_secret(secret) == issued.key.secret_hash
    assert secret not in repr(issued.key)
    assert issued.key.created_at == clock.now()


def test_each_issued_key_has_its_own_id_and_secret(clock: FakeClock) -> None:
    first, second = new_api_key("a", [], clock), new_api_key("a", [], clock)
    assert first.key.key_id != second.key.key_id
    assert first.key.secret_hash != second.key.secret_hash


def test_secret_may_itself_contain_underscores() -> None:
    assert parse_api_key("nxk_abcdef012345_se_cr_et") == ("abcdef012345", "se_cr_et")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "nxk",
        "nxk_",
        "nxk_abcdef012345",
        "nxk_abcdef012345_",
        "xyz_abcdef012345_secret",
        "NXK_abcdef012345_secret",
        "nxk_abcdef01234_secret",
        "nxk_abcdef0123456_secret",
        "Bearer nxk_abcdef012345_secret",
        "abcdef012345_secret",
    ],
)
def test_token_not_shaped_like_a_key_does_not_parse(token: str) -> None:
    assert parse_api_key(token) is None


# -- authentication ----------------------------------------------------------------------------------


async def test_valid_key_authenticates_as_its_principal_with_the_key_roles_and_name(
    authenticator: ApiKeyAuthenticator, issued: IssuedKey
) -> None:
    principal = await authenticator.authenticate(bearer(issued.plaintext), Channel.API)
    assert principal.id == f"key:{issued.key.key_id}"
    assert principal.kind == "api_key"
    assert not principal.is_anonymous
    assert principal.roles == frozenset({"analyst", "viewer"})
    assert dict(principal.attributes) == {"name": "reporting"}


async def test_a_tenant_keys_principal_belongs_to_the_keys_tenants(
    authenticator: ApiKeyAuthenticator, keys: MemoryKeyStore, clock: FakeClock
) -> None:
    tenant_key = new_api_key("acme-ci", ["deployer"], clock, tenants=["acme", "globex"])
    await keys.add(tenant_key.key)

    principal = await authenticator.authenticate(bearer(tenant_key.plaintext), Channel.CLI)
    cached = await authenticator.authenticate(bearer(tenant_key.plaintext), Channel.MCP)

    assert tenant_key.key.tenants == frozenset({"acme", "globex"})
    assert principal.tenants == cached.tenants == frozenset({"acme", "globex"})
    assert principal.tenant_id is None  # only a session is made in one tenant


async def test_a_platform_keys_principal_belongs_to_no_tenant(
    authenticator: ApiKeyAuthenticator, issued: IssuedKey
) -> None:
    principal = await authenticator.authenticate(bearer(issued.plaintext), Channel.API)

    assert principal.tenants == frozenset()


@pytest.mark.parametrize("tenants", [["Acme"], ["acme", ""], ["information_schema"], "acme"])
def test_a_key_for_an_invalid_tenant_id_is_never_minted(clock: FakeClock, tenants: list[str] | str) -> None:
    with pytest.raises(ConfigurationError, match="tenant"):
        new_api_key("ci", [], clock, tenants=tenants)


async def test_same_key_authenticates_on_every_channel(
    authenticator: ApiKeyAuthenticator, issued: IssuedKey
) -> None:
    ids = {(await authenticator.authenticate(bearer(issued.plaintext), channel)).id for channel in Channel}
    assert ids == {f"key:{issued.key.key_id}"}


async def test_missing_credential_is_refused(authenticator: ApiKeyAuthenticator, issued: IssuedKey) -> None:
    with pytest.raises(AuthenticationError, match="API key is required"):
        await authenticator.authenticate(None, Channel.API)


async def test_malformed_credential_is_refused(authenticator: ApiKeyAuthenticator, issued: IssuedKey) -> None:
    with pytest.raises(AuthenticationError, match="not a valid API key"):
        await authenticator.authenticate(bearer("let-me-in"), Channel.API)


async def test_right_id_with_a_wrong_secret_is_refused(
    authenticator: ApiKeyAuthenticator, issued: IssuedKey
) -> None:
    forged = f"nxk_{issued.key.key_id}_{'A' * 43}"
    with pytest.raises(AuthenticationError, match="unknown, revoked or wrong"):
        await authenticator.authenticate(bearer(forged), Channel.API)


async def test_wrong_secret_is_refused_even_while_the_key_is_cached(
    authenticator: ApiKeyAuthenticator, issued: IssuedKey
) -> None:
    await authenticator.authenticate(bearer(issued.plaintext), Channel.API)
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(bearer(issued.plaintext + "x"), Channel.API)


async def test_unknown_key_id_is_refused(authenticator: ApiKeyAuthenticator, issued: IssuedKey) -> None:
    _, secret = parse_api_key(issued.plaintext) or ("", "")
    other_id = "0" * 12 if issued.key.key_id != "0" * 12 else "1" * 12
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(bearer(f"nxk_{other_id}_{secret}"), Channel.API)


async def test_revoked_key_is_refused(
    authenticator: ApiKeyAuthenticator, issued: IssuedKey, keys: MemoryKeyStore, clock: FakeClock
) -> None:
    await keys.revoke(issued.key.key_id, clock.now())
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(bearer(issued.plaintext), Channel.API)


async def test_key_added_after_a_refusal_works_at_once(
    authenticator: ApiKeyAuthenticator, keys: MemoryKeyStore, clock: FakeClock
) -> None:
    issued = new_api_key("late", [], clock)
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(bearer(issued.plaintext), Channel.API)
    await keys.add(issued.key)
    principal = await authenticator.authenticate(bearer(issued.plaintext), Channel.API)
    assert principal.id == f"key:{issued.key.key_id}"


# -- cache -------------------------------------------------------------------------------------------


async def test_key_revoked_elsewhere_keeps_working_only_within_the_cache_ttl(
    authenticator: ApiKeyAuthenticator, issued: IssuedKey, keys: MemoryKeyStore, clock: FakeClock
) -> None:
    await authenticator.authenticate(bearer(issued.plaintext), Channel.API)
    await keys.revoke(issued.key.key_id, clock.now())

    clock.advance(TTL_S - 0.01)
    await authenticator.authenticate(bearer(issued.plaintext), Channel.API)
    clock.advance(0.01)
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(bearer(issued.plaintext), Channel.API)


async def test_forgetting_a_key_makes_its_revocation_immediate(
    authenticator: ApiKeyAuthenticator, issued: IssuedKey, keys: MemoryKeyStore, clock: FakeClock
) -> None:
    await authenticator.authenticate(bearer(issued.plaintext), Channel.API)
    await keys.revoke(issued.key.key_id, clock.now())
    authenticator.forget(issued.key.key_id)
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(bearer(issued.plaintext), Channel.API)


async def test_forgetting_every_key_makes_all_revocations_immediate(
    authenticator: ApiKeyAuthenticator, issued: IssuedKey, keys: MemoryKeyStore, clock: FakeClock
) -> None:
    other = new_api_key("other", [], clock)
    await keys.add(other.key)
    for key in (issued, other):
        await authenticator.authenticate(bearer(key.plaintext), Channel.API)
        await keys.revoke(key.key.key_id, clock.now())
    authenticator.forget()
    for key in (issued, other):
        with pytest.raises(AuthenticationError):
            await authenticator.authenticate(bearer(key.plaintext), Channel.API)


async def test_forgetting_one_key_keeps_the_others_cached(
    authenticator: ApiKeyAuthenticator, issued: IssuedKey, keys: MemoryKeyStore, clock: FakeClock
) -> None:
    other = new_api_key("other", [], clock)
    await keys.add(other.key)
    await authenticator.authenticate(bearer(issued.plaintext), Channel.API)
    await keys.revoke(issued.key.key_id, clock.now())
    authenticator.forget(other.key.key_id)
    await authenticator.authenticate(bearer(issued.plaintext), Channel.API)  # still cached


async def test_zero_ttl_disables_the_cache_so_revocation_is_immediate(
    issued: IssuedKey, keys: MemoryKeyStore, clock: FakeClock
) -> None:
    authenticator = ApiKeyAuthenticator(keys, clock, cache_ttl_s=0)
    await authenticator.authenticate(bearer(issued.plaintext), Channel.API)
    await keys.revoke(issued.key.key_id, clock.now())
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(bearer(issued.plaintext), Channel.API)


# -- anonymous ---------------------------------------------------------------------------------------


async def test_with_auth_off_every_caller_is_anonymous_whatever_it_presents() -> None:
    authenticator = AnonymousAuthenticator()
    assert await authenticator.authenticate(None, Channel.CLI) is ANONYMOUS
    assert await authenticator.authenticate(bearer("nxk_abcdef012345_secret"), Channel.MCP) is ANONYMOUS
    assert ANONYMOUS.is_anonymous
