"""CredentialAuthenticator: API keys to the key authenticator, other bearer tokens to the identity service."""

from __future__ import annotations

import pytest
from tests.unit.core.auth.rig import IdentityRig, build_rig

from nexus.backends.memory import MemoryKeyStore
from nexus.core.auth.authenticator import CredentialAuthenticator
from nexus.core.auth.policy import SessionPolicy
from nexus.core.identity import ApiKeyAuthenticator, IssuedKey, new_api_key
from nexus.core.types import Channel, Credential
from nexus.errors import AuthenticationError


@pytest.fixture
async def issued(rig: IdentityRig) -> tuple[ApiKeyAuthenticator, IssuedKey]:
    store = MemoryKeyStore()
    key = new_api_key("ci", ["deployer"], rig.clock)
    await store.add(key.key)
    return ApiKeyAuthenticator(store, rig.clock, cache_ttl_s=0), key


async def test_api_keys_go_to_the_key_authenticator(
    rig: IdentityRig, issued: tuple[ApiKeyAuthenticator, IssuedKey]
) -> None:
    keys, key = issued
    authenticator = CredentialAuthenticator(api_keys=keys, identity=rig.service)
    for scheme in ("bearer", "api_key"):
        principal = await authenticator.authenticate(Credential(scheme, key.plaintext), Channel.MCP)
        assert principal.id == f"key:{key.key.key_id}"
        assert principal.kind == "api_key"
        assert principal.roles == frozenset({"deployer"})
        assert principal.auth_time is None


async def test_api_keys_are_refused_when_they_are_disabled(
    rig: IdentityRig, issued: tuple[ApiKeyAuthenticator, IssuedKey]
) -> None:
    _, key = issued
    authenticator = CredentialAuthenticator(api_keys=None, identity=rig.service)
    for scheme in ("bearer", "api_key"):
        with pytest.raises(AuthenticationError, match="API keys are not accepted"):
            await authenticator.authenticate(Credential(scheme, key.plaintext), Channel.API)


async def test_a_wrong_api_key_is_refused_by_the_key_authenticator(
    rig: IdentityRig, issued: tuple[ApiKeyAuthenticator, IssuedKey]
) -> None:
    keys, key = issued
    authenticator = CredentialAuthenticator(api_keys=keys, identity=rig.service)
    forged = key.plaintext[:-4] + "AAAA"
    with pytest.raises(AuthenticationError, match="API key is unknown, revoked or wrong"):
        await authenticator.authenticate(Credential("bearer", forged), Channel.API)


async def test_other_bearer_tokens_go_to_the_identity_service(
    rig: IdentityRig, issued: tuple[ApiKeyAuthenticator, IssuedKey]
) -> None:
    keys, _ = issued
    await rig.add_user("alice", roles=["analyst"])
    grant = await rig.login()
    authenticator = CredentialAuthenticator(api_keys=keys, identity=rig.service)
    principal = await authenticator.authenticate(Credential("bearer", grant.access.token), Channel.API)
    assert principal.id == grant.session.user_id
    assert principal.session_id == grant.session.session_id
    with pytest.raises(AuthenticationError, match="another channel"):
        await authenticator.authenticate(Credential("bearer", grant.access.token), Channel.CLI)
    with pytest.raises(AuthenticationError, match="Exchange the session token"):
        await authenticator.authenticate(Credential("bearer", grant.session_token), Channel.API)


async def test_channel_tokens_are_refused_when_logins_are_off(
    rig: IdentityRig, issued: tuple[ApiKeyAuthenticator, IssuedKey]
) -> None:
    keys, _ = issued
    await rig.add_user("alice")
    grant = await rig.login()
    authenticator = CredentialAuthenticator(api_keys=keys, identity=None)
    with pytest.raises(AuthenticationError, match="bearer token"):
        await authenticator.authenticate(Credential("bearer", grant.access.token), Channel.API)


async def test_a_token_in_another_scheme_is_refused(rig: IdentityRig) -> None:
    await rig.add_user("alice")
    grant = await rig.login()
    authenticator = CredentialAuthenticator(api_keys=None, identity=rig.service)
    with pytest.raises(AuthenticationError, match="bearer token"):
        await authenticator.authenticate(Credential("basic", grant.access.token), Channel.API)


async def test_no_credential_is_refused(
    rig: IdentityRig, issued: tuple[ApiKeyAuthenticator, IssuedKey]
) -> None:
    keys, _ = issued
    for authenticator in (
        CredentialAuthenticator(api_keys=keys, identity=rig.service),
        CredentialAuthenticator(api_keys=None, identity=None),
    ):
        with pytest.raises(AuthenticationError, match="Log in, or send an API key"):
            await authenticator.authenticate(None, Channel.API)


async def test_forget_drops_cached_sessions_so_a_store_revocation_shows_at_once() -> None:
    rig = build_rig(sessions=SessionPolicy(cache_s=60))
    await rig.add_user("alice")
    grant = await rig.login()
    authenticator = CredentialAuthenticator(api_keys=None, identity=rig.service)
    bearer = Credential("bearer", grant.access.token)
    assert await authenticator.authenticate(bearer, Channel.API)
    await rig.sessions.revoke(grant.session.session_id, rig.clock.now())  # behind the service's back
    assert await authenticator.authenticate(bearer, Channel.API)  # cached
    authenticator.forget()
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(bearer, Channel.API)
