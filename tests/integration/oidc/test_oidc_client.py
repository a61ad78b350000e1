"""The OIDC relying party against a real provider process: the code flow, and every forgery refused."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from tests.support.oidc import REDIRECT_URI, OidcProvider, free_port

from nexus.backends.auth.oidc import OidcClient, OidcSettings
from nexus.backends.ephemeral import MemoryEphemeralStore
from nexus.core.auth.model import ExternalIdentity
from nexus.core.auth.ports import SsoProtocol
from nexus.errors import AuthenticationError, DependencyUnavailableError

ROLE_MAP = {"admins": "admin", "developers": "developer"}


def client_for(settings: OidcSettings, ephemeral: MemoryEphemeralStore) -> OidcClient:
    return OidcClient(settings, ephemeral)


async def sign_in(
    client: OidcClient, provider: OidcProvider, *, login_hint: str = "alice", **extra: str
) -> tuple[ExternalIdentity, str]:
    redirect = await client.begin(return_to="/after")
    params = await provider.authorize(redirect.url, login_hint=login_hint, **extra)
    return await client.complete(params)


def without_query_params(url: str, *names: str) -> str:
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k not in names]
    return urlunsplit(parts._replace(query=urlencode(kept)))


async def test_alice_signs_in_with_mapped_roles_and_claims_as_attributes(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    settings = oidc_provider.settings(role_map=ROLE_MAP, attributes=("email", "department", "absent"))
    client: SsoProtocol = client_for(settings, ephemeral)

    redirect = await client.begin(return_to="/dashboard")
    query = dict(parse_qsl(urlsplit(redirect.url).query))
    assert query["code_challenge_method"] == "S256"
    assert query["state"] == redirect.state
    assert query["response_type"] == "code"
    assert len(query["nonce"]) >= 32
    assert len(query["code_challenge"]) == 43
    params = await oidc_provider.authorize(redirect.url, login_hint="alice")
    identity, return_to = await client.complete(params)

    assert return_to == "/dashboard"
    assert client.name == identity.source == "oidc"
    assert client.metadata() is None
    assert identity.subject == "u-alice-7f3a"
    assert identity.username == "alice"
    assert identity.roles == {"admin", "developer"}
    assert dict(identity.attributes) == {"email": "alice@example.test", "department": "engineering"}


async def test_bob_gets_only_the_roles_his_groups_map_to(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings(role_map={"admins": "admin"}), ephemeral)

    identity, _ = await sign_in(client, oidc_provider, login_hint="bob")

    assert (identity.username, identity.roles) == ("bob", frozenset())


async def test_claim_values_become_roles_when_asked(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings(claims_as_roles=True), ephemeral)

    identity, _ = await sign_in(client, oidc_provider, login_hint="bob")

    assert identity.roles == {"developers"}


@pytest.mark.parametrize(
    ("realm", "client_id"),
    [("main", "nexus-public"), ("post", "nexus"), ("main", "nexus-es"), ("main", "nexus-ed")],
    ids=["public-client-pkce-only", "client-secret-post", "es256-id-token", "eddsa-id-token"],
)
async def test_each_client_kind_and_signature_algorithm_signs_in(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore, realm: str, client_id: str
) -> None:
    client = client_for(oidc_provider.settings(realm, client_id, role_map=ROLE_MAP), ephemeral)

    identity, _ = await sign_in(client, oidc_provider)

    assert identity.subject == "u-alice-7f3a"
    assert identity.roles == {"admin", "developer"}


async def test_provider_refuses_the_code_without_the_pkce_verifier(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings(), ephemeral)
    redirect = await client.begin(return_to="/")
    params = await oidc_provider.authorize(redirect.url)
    form = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT_URI}

    missing = await oidc_provider.token_request(form)
    wrong = await oidc_provider.token_request({**form, "code_verifier": secrets.token_urlsafe(48)})

    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    identity, _ = await client.complete(params)  # the relying party holds the right verifier
    assert identity.username == "alice"


async def test_authorization_request_without_pkce_is_refused_by_the_provider(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings(), ephemeral)
    redirect = await client.begin(return_to="/")

    url = without_query_params(redirect.url, "code_challenge", "code_challenge_method")
    params = await oidc_provider.authorize(url)

    assert params["error"] == "invalid_request"
    with pytest.raises(AuthenticationError, match=r"refused the sign-in \(invalid_request\)"):
        await client.complete(params)


async def test_replayed_state_is_refused(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings(), ephemeral)
    redirect = await client.begin(return_to="/")
    params = await oidc_provider.authorize(redirect.url)
    await client.complete(params)

    with pytest.raises(AuthenticationError, match="already used"):
        await client.complete(params)


async def test_unknown_state_is_refused_and_the_real_one_still_works(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings(), ephemeral)
    redirect = await client.begin(return_to="/")
    params = await oidc_provider.authorize(redirect.url)

    for state in (secrets.token_hex(16), "", "../../other:key"):
        with pytest.raises(AuthenticationError, match="unknown"):
            await client.complete({**params, "state": state})
    identity, _ = await client.complete(params)
    assert identity.username == "alice"


async def test_state_from_another_provider_client_is_unknown(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    first = client_for(oidc_provider.settings(), ephemeral)
    other = client_for(oidc_provider.settings(client_id="nexus-es"), ephemeral)
    redirect = await first.begin(return_to="/")
    params = await oidc_provider.authorize(redirect.url)

    with pytest.raises(AuthenticationError, match="unknown"):
        await other.complete(params)


async def test_provider_error_is_refused_and_uses_up_the_state(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings(), ephemeral)
    redirect = await client.begin(return_to="/")
    params = await oidc_provider.authorize(redirect.url, login_hint="mallory")

    with pytest.raises(AuthenticationError, match=r"refused the sign-in \(access_denied\)"):
        await client.complete(params)
    with pytest.raises(AuthenticationError, match="already used"):
        await client.complete(params)


async def test_response_naming_another_issuer_is_refused(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings(), ephemeral)
    redirect = await client.begin(return_to="/")
    params = await oidc_provider.authorize(redirect.url)

    with pytest.raises(AuthenticationError, match="another identity provider"):
        await client.complete({**params, "iss": oidc_provider.issuer("post")})


BAD_ID_TOKENS = [
    pytest.param("foreign_signature", "signature is invalid", id="forged-signature"),
    pytest.param("unknown_kid", "unknown key", id="unknown-kid"),
    pytest.param("alg_none", "algorithm that is not allowed", id="alg-none"),
    pytest.param("hs256_client_secret", "algorithm that is not allowed", id="hs256-confusion"),
    pytest.param("wrong_audience", "meant for another client", id="wrong-audience"),
    pytest.param("extra_audience_without_azp", "issued to another client", id="extra-audience-no-azp"),
    pytest.param("expired", "has expired", id="expired"),
    pytest.param("not_yet_valid", "not valid yet", id="not-yet-valid"),
    pytest.param("wrong_nonce", "does not belong to this sign-in", id="wrong-nonce"),
    pytest.param("wrong_issuer", "issued by another issuer", id="issuer-mismatch"),
]


@pytest.mark.parametrize(("mode", "reason"), BAD_ID_TOKENS)
async def test_bad_id_token_from_a_real_exchange_is_refused(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore, mode: str, reason: str
) -> None:
    client = client_for(oidc_provider.settings(role_map=ROLE_MAP), ephemeral)

    with pytest.raises(AuthenticationError, match=reason) as refused:
        await sign_in(client, oidc_provider, test_id_token=mode)

    assert "eyJ" not in refused.value.message  # no token material in what a caller sees


async def test_discovery_naming_another_issuer_is_refused(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings("mixup"), ephemeral)

    with pytest.raises(AuthenticationError, match="names another issuer"):
        await client.begin(return_to="/")


async def test_unreachable_provider_is_a_dependency_failure(ephemeral: MemoryEphemeralStore) -> None:
    settings = OidcSettings(
        issuer=f"http://127.0.0.1:{free_port()}/realms/main",
        client_id="nexus",
        redirect_uri=REDIRECT_URI,
        timeout_s=2,
    )

    with pytest.raises(DependencyUnavailableError, match="cannot be reached"):
        await OidcClient(settings, ephemeral).begin(return_to="/")


async def test_discovery_and_keys_are_fetched_once_for_several_sign_ins(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings(), ephemeral)
    before = await oidc_provider.stats()

    for user in ("alice", "bob", "alice"):
        identity, _ = await sign_in(client, oidc_provider, login_hint=user)
        assert identity.username == user
    after = await oidc_provider.stats()

    assert delta(before, after, "discovery:main") == 1
    assert delta(before, after, "jwks:main") == 1


async def test_rotated_signing_key_is_fetched_once_and_accepted(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings(), ephemeral)
    await sign_in(client, oidc_provider)
    before = await oidc_provider.stats()

    await oidc_provider.rotate_key()
    identity, _ = await sign_in(client, oidc_provider)
    await sign_in(client, oidc_provider)
    after = await oidc_provider.stats()

    assert identity.username == "alice"
    assert delta(before, after, "jwks:main") == 1


async def test_unknown_kid_refetches_the_keys_once_then_fails(
    oidc_provider: OidcProvider, ephemeral: MemoryEphemeralStore
) -> None:
    client = client_for(oidc_provider.settings(), ephemeral)
    await sign_in(client, oidc_provider)
    before = await oidc_provider.stats()

    with pytest.raises(AuthenticationError, match="unknown key"):
        await sign_in(client, oidc_provider, test_id_token="unknown_kid")
    after = await oidc_provider.stats()

    assert delta(before, after, "jwks:main") == 1


def delta(before: dict[str, Any], after: dict[str, Any], name: str) -> int:
    return int(after.get(name, 0)) - int(before.get(name, 0))
