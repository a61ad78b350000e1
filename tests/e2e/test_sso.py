"""Single sign-on through a served app, against the real OIDC provider and SAML IdP processes.

The browser is played with plain HTTP: start at `/auth/sso/{protocol}/start`, follow the identity
provider, come back to the app's callback. API and MCP logins get their grant from the callback;
the CLI's comes back to its loopback `return_to` as a one-time code, exchanged at
`/cli/v1/auth/sso/exchange`. Each protocol's login then calls a workflow on that channel.

On an app with tenants, a sign-on begins on a tenant's route (its subdomain in the browser, its
prefix for the CLI, which starts the sign-on itself at `POST /cli/v1/auth/sso/{protocol}/start`)
while the provider calls back on the platform's address: the session is the tenant's all the same.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx2
import pytest
from tests.e2e.conftest import StartAuthApp, build_app
from tests.support.oidc import CLIENT_SECRET, OidcProvider, free_port
from tests.support.saml import KeyPair, SamlIdp

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.enterprise.auth import EnterpriseAuthProvider
from nexus.enterprise.tenancy import TenantManager
from nexus.testing import client_for
from nexus.testing.clients import ChannelClient, TenantAddress
from nexus.workflow.builder import WorkflowBuilder

ClientFactory = Callable[..., ChannelClient]
FORM_FIELD = re.compile(r'name="([A-Za-z]+)" value="([^"]*)"')
LOOPBACK_RETURN = "http://127.0.0.1:9/callback"  # the CLI's listener; never contacted here
ROLE_MAP = {"admins": "admin", "developers": "developer"}


@pytest.fixture
def sso_app(auth_app: StartAuthApp) -> Callable[..., Any]:
    async def start(port: int, provider: EnterpriseAuthProvider) -> RunningNexus:
        def setup(app: Nexus) -> None:
            app.auth.provider = provider

        return await auth_app(setup, users={}, api_port=port)

    return start


VERIFIER = "a-code-verifier-only-the-cli-process-knows-0123456789"
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()


async def _start_url(http: httpx2.AsyncClient, server: RunningNexus, protocol: str, channel: Channel) -> str:
    query: dict[str, str] = {"channel": channel.value}
    if channel is Channel.CLI:
        query["return_to"] = LOOPBACK_RETURN
        query["code_challenge"] = CHALLENGE
    start = await http.get(f"{server.api_url}/auth/sso/{protocol}/start?{urlencode(query)}")
    assert start.status_code == 302, start.text
    return start.headers["location"]


async def _finish(
    http: httpx2.AsyncClient,
    server: RunningNexus,
    callback: httpx2.Response,
    channel: Channel,
    prefix: str | None = None,
) -> dict[str, Any]:
    """The grant, from the callback (API, MCP) or through the CLI's one-time code (exchanged on
    the CLI route `prefix` names, the platform's when None)."""
    if channel is not Channel.CLI:
        assert callback.status_code == 200, callback.text
        grant: dict[str, Any] = callback.json()
        return grant
    assert callback.status_code == 302, callback.text
    location = callback.headers["location"]
    assert location.startswith(LOOPBACK_RETURN + "?code=")
    code = dict(parse_qsl(urlsplit(location).query))["code"]
    exchange = f"{server.api_url}/cli/v1/auth/sso/exchange"
    headers = {"x-nexus-tenant": prefix} if prefix is not None else {}
    exchanged = await http.post(exchange, json={"code": code, "code_verifier": VERIFIER}, headers=headers)
    assert exchanged.status_code == 200, exchanged.text
    again = await http.post(exchange, json={"code": code, "code_verifier": VERIFIER}, headers=headers)
    assert again.status_code == 401  # the code is single-use
    grant: dict[str, Any] = exchanged.json()
    return grant


async def test_oidc_login_yields_a_token_for_its_channel(
    sso_app: Callable[..., Any],
    oidc_provider: OidcProvider,
    channel: Channel,
    client: ClientFactory,
) -> None:
    provider = EnterpriseAuthProvider(
        sso_endpoint=oidc_provider.issuer(),
        oidc_client_id="nexus-app",
        oidc_client_secret=CLIENT_SECRET,
        oidc_redirect_uri=oidc_provider.app_redirect_uri,
        oidc_role_map=ROLE_MAP,
    )
    server = await sso_app(oidc_provider.app_port, provider)
    async with httpx2.AsyncClient(timeout=10) as http:
        authorize = await _start_url(http, server, "oidc", channel)
        idp = await http.get(f"{authorize}&{urlencode({'login_hint': 'alice'})}")
        assert idp.status_code == 302, idp.text
        callback = await http.get(idp.headers["location"])
        grant = await _finish(http, server, callback, channel)
    assert grant["channel"] == channel.value
    assert sorted(grant["user"]["roles"]) == ["admin", "developer"]
    reply = await client(channel, server, grant["access_token"]).execute("add", {"a": 4, "b": 5})
    assert reply.ok, reply
    records = await server.app.audit_log(workflow="_auth")
    assert any(r.reason == "logged in by oidc" and r.principal_id.startswith("oidc:") for r in records)


async def test_a_forged_oidc_id_token_fails_the_login_and_is_audited(
    sso_app: Callable[..., Any],
    oidc_provider: OidcProvider,
) -> None:
    provider = EnterpriseAuthProvider(
        sso_endpoint=oidc_provider.issuer(),
        oidc_client_id="nexus-app",
        oidc_client_secret=CLIENT_SECRET,
        oidc_redirect_uri=oidc_provider.app_redirect_uri,
    )
    server = await sso_app(oidc_provider.app_port, provider)
    async with httpx2.AsyncClient(timeout=10) as http:
        authorize = await _start_url(http, server, "oidc", Channel.API)
        idp = await http.get(
            f"{authorize}&{urlencode({'login_hint': 'alice', 'test_id_token': 'foreign_signature'})}"
        )
        callback = await http.get(idp.headers["location"])
    assert callback.status_code == 401, callback.text
    assert callback.json()["code"] == "not_authenticated"
    records = await server.app.audit_log(workflow="_auth")
    assert any(r.outcome is Outcome.UNAUTHENTICATED and "signature" in r.reason for r in records), records


async def _saml_provider(
    server_port: int, saml_sp_keys: KeyPair, saml_idp: SamlIdp
) -> EnterpriseAuthProvider:
    base = f"http://127.0.0.1:{server_port}"
    return EnterpriseAuthProvider(
        sso_endpoint=saml_idp.metadata_url,
        sso_protocol="saml",
        saml_entity_id=f"{base}/auth/sso/saml/metadata",
        saml_acs_url=f"{base}/auth/sso/saml/callback",
        saml_sp_cert_file=saml_sp_keys.cert_file,
        saml_sp_key_file=saml_sp_keys.key_file,
        saml_role_map=ROLE_MAP,
    )


async def _saml_form(http: httpx2.AsyncClient, url: str, **hooks: str) -> dict[str, str]:
    answer = await http.get(f"{url}&{urlencode({'user': 'alice', **hooks})}")
    assert answer.status_code == 200, answer.text
    return {name: html.unescape(value) for name, value in FORM_FIELD.findall(answer.text)}


async def test_saml_login_yields_a_token_for_its_channel(
    sso_app: Callable[..., Any],
    saml_idp: SamlIdp,
    saml_sp_keys: KeyPair,
    channel: Channel,
    client: ClientFactory,
) -> None:
    port = free_port()
    server = await sso_app(port, await _saml_provider(port, saml_sp_keys, saml_idp))
    async with httpx2.AsyncClient(timeout=10) as http:
        metadata = await http.get(f"{server.api_url}/auth/sso/saml/metadata")
        assert metadata.status_code == 200
        await asyncio.to_thread(saml_idp.register_sp, metadata.text)
        form = await _saml_form(http, await _start_url(http, server, "saml", channel))
        callback = await http.post(f"{server.api_url}/auth/sso/saml/callback", data=form)
        grant = await _finish(http, server, callback, channel)
        replay = await http.post(f"{server.api_url}/auth/sso/saml/callback", data=form)
    assert replay.status_code == 401  # the same assertion twice: refused
    assert grant["channel"] == channel.value
    assert sorted(grant["user"]["roles"]) == ["admin", "developer"]
    reply = await client(channel, server, grant["access_token"]).execute("add", {"a": 4, "b": 5})
    assert reply.ok, reply


async def test_a_tampered_saml_assertion_fails_the_login_and_is_audited(
    sso_app: Callable[..., Any],
    saml_idp: SamlIdp,
    saml_sp_keys: KeyPair,
) -> None:
    import base64

    port = free_port()
    server = await sso_app(port, await _saml_provider(port, saml_sp_keys, saml_idp))
    async with httpx2.AsyncClient(timeout=10) as http:
        metadata = await http.get(f"{server.api_url}/auth/sso/saml/metadata")
        await asyncio.to_thread(saml_idp.register_sp, metadata.text)
        form = await _saml_form(http, await _start_url(http, server, "saml", Channel.API))
        xml = base64.b64decode(form["SAMLResponse"]).decode()
        assert ">alice<" in xml
        form["SAMLResponse"] = base64.b64encode(xml.replace(">alice<", ">mallory<").encode()).decode()
        callback = await http.post(f"{server.api_url}/auth/sso/saml/callback", data=form)
    assert callback.status_code == 401, callback.text
    records = await server.app.audit_log(workflow="_auth")
    assert any(r.outcome is Outcome.UNAUTHENTICATED for r in records)
    assert not any(r.outcome is Outcome.SUCCESS and r.reason.startswith("logged in") for r in records)


async def _nexus_login_sso(base: list[str], env: dict[str, str]) -> None:
    """Run `nexus ... login --sso oidc --no-browser` and play the browser at the provider address
    it prints: the provider sends it to Nexus's callback, and Nexus to the CLI's listener."""
    login = await asyncio.create_subprocess_exec(
        *base, "login", "--sso", "oidc", "--no-browser",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert login.stderr is not None
    url = ""
    while not url.startswith("http"):
        line = (await asyncio.wait_for(login.stderr.readline(), timeout=30)).decode().strip()
        assert line or login.returncode is None, "nexus login ended before printing the sign-in address"
        url = line
    async with httpx2.AsyncClient(timeout=10) as browser:
        back = await browser.get(f"{url}&{urlencode({'login_hint': 'alice'})}")  # the provider
        assert back.status_code == 302, back.text
        callback = await browser.get(back.headers["location"])  # Nexus's callback
        assert callback.status_code == 302, callback.text
        assert callback.headers["location"].startswith("http://127.0.0.1:")  # the CLI's listener
        landed = await browser.get(callback.headers["location"])
        assert landed.status_code == 200
    _, err = await asyncio.wait_for(login.communicate(), timeout=30)
    assert login.returncode == 0, err.decode()


async def _nexus(base: list[str], env: dict[str, str], *args: str) -> Any:
    """The JSON a successful `nexus` command prints."""
    process = await asyncio.create_subprocess_exec(
        *base, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env["NEXUS_CONFIG_DIR"] = str(tmp_path / "config")
    return env


async def test_nexus_login_sso_signs_on_through_the_browser_and_its_loopback_listener(
    sso_app: Callable[..., Any], oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    """The real `nexus login --sso oidc --no-browser`: the test plays the browser at the URL it prints."""
    provider = EnterpriseAuthProvider(
        sso_endpoint=oidc_provider.issuer(),
        oidc_client_id="nexus-app",
        oidc_client_secret=CLIENT_SECRET,
        oidc_role_map=ROLE_MAP,
    )
    server = await sso_app(oidc_provider.app_port, provider)
    env = _cli_env(tmp_path)
    base = [sys.executable, "-m", "nexus", "--url", server.api_url]
    await _nexus_login_sso(base, env)

    who = await _nexus(base, env, "whoami", "--json")
    assert sorted(who["roles"]) == ["admin", "developer"]
    ran = await _nexus(base, env, "run", "add", "-p", "a=2", "-p", "b=3", "--json")
    assert ran["outputs"] == {"add": {"result": 5}}


async def test_a_sign_on_code_is_worthless_without_the_verifier_of_the_program_that_asked(
    sso_app: Callable[..., Any], oidc_provider: OidcProvider
) -> None:
    provider = EnterpriseAuthProvider(
        sso_endpoint=oidc_provider.issuer(),
        oidc_client_id="nexus-app",
        oidc_client_secret=CLIENT_SECRET,
    )
    server = await sso_app(oidc_provider.app_port, provider)
    async with httpx2.AsyncClient(timeout=10) as http:
        query = urlencode({"channel": "cli", "return_to": LOOPBACK_RETURN})
        no_challenge = await http.get(f"{server.api_url}/auth/sso/oidc/start?{query}")
        assert no_challenge.status_code == 422  # a loopback return_to must come with a challenge
        authorize = await _start_url(http, server, "oidc", Channel.CLI)
        idp = await http.get(f"{authorize}&{urlencode({'login_hint': 'alice'})}")
        callback = await http.get(idp.headers["location"])
        code = dict(parse_qsl(urlsplit(callback.headers["location"]).query))["code"]
        exchange = f"{server.api_url}/cli/v1/auth/sso/exchange"
        stolen = await http.post(exchange, json={"code": code, "code_verifier": "x" * 43})
        assert stolen.status_code == 401
        assert "started this sign-on" in stolen.json()["detail"]
        late = await http.post(exchange, json={"code": code, "code_verifier": VERIFIER})
        assert late.status_code == 401  # a failed try spends the code
    assert stolen.headers["cache-control"] == "no-store"


async def test_the_clis_own_sign_on_start_takes_only_a_loopback_return_bound_to_a_challenge(
    sso_app: Callable[..., Any], oidc_provider: OidcProvider
) -> None:
    provider = EnterpriseAuthProvider(
        sso_endpoint=oidc_provider.issuer(), oidc_client_id="nexus-app", oidc_client_secret=CLIENT_SECRET
    )
    server = await sso_app(oidc_provider.app_port, provider)
    start = f"{server.api_url}/cli/v1/auth/sso/oidc/start"
    refused_bodies = [
        {"return_to": "/after", "code_challenge": CHALLENGE},  # the CLI's code comes back to it only
        {"return_to": LOOPBACK_RETURN},  # no challenge: any local program could exchange the code
        {"return_to": "https://elsewhere.example/cb", "code_challenge": CHALLENGE},
        {"return_to": LOOPBACK_RETURN, "code_challenge": CHALLENGE, "channel": "api"},
    ]
    async with httpx2.AsyncClient(timeout=10) as http:
        refused = [await http.post(start, json=body) for body in refused_bodies]
        begun = await http.post(start, json={"return_to": LOOPBACK_RETURN, "code_challenge": CHALLENGE})
        idp = await http.get(f"{begun.json()['url']}&{urlencode({'login_hint': 'alice'})}")
        callback = await http.get(idp.headers["location"])
        grant = await _finish(http, server, callback, Channel.CLI)

    assert [answer.status_code for answer in refused] == [422] * len(refused_bodies)
    assert begun.status_code == 200, begun.text
    assert begun.headers["cache-control"] == "no-store"
    assert grant["channel"] == "cli"


# -- tenants -----------------------------------------------------------------------------------------

BASE = "api.test"
StartTenantApp = Callable[[int, EnterpriseAuthProvider], Awaitable[RunningNexus]]
ELSEWHERE = "single sign-on begun on another tenant's route, not this tenant's"


@pytest.fixture
async def tenant_sso_app(tmp_path: Path) -> AsyncIterator[StartTenantApp]:
    """`await tenant_sso_app(port, provider)`: an app with auth, `provider` and two tenants, acme and
    globex (each its id as subdomain under api.test and as CLI prefix, MCP at /t/{id}/mcp), serving
    the tenant-scoped workflow "where". No users: single sign-on makes them at their first sign-on."""
    running: list[RunningNexus] = []

    async def start(port: int, provider: EnterpriseAuthProvider) -> RunningNexus:
        app = build_app(f"sqlite:///{tmp_path}/tenant-sso-{len(running)}.db", api_port=port, enable_auth=True)
        app.auth.provider = provider
        app.tenancy.manager = TenantManager(isolation_level="moderate")
        app.tenancy.base_domain = BASE
        app.tenancy.routing = {"api": "subdomain", "cli": "prefix", "mcp": "path"}
        where = WorkflowBuilder()
        where.add_node("PythonCodeNode", "where", {"code": "result = tenant_context['tenant_id']"})
        app.register_workflow("where", where.build(), tenant_scoped=True)
        for tenant in ("acme", "globex"):
            await app.create_tenant(tenant, tenant.title(), {"api_subdomain": tenant, "cli_prefix": tenant})
        server = await asyncio.to_thread(app.start_in_thread)
        running.append(server)
        return server

    yield start
    for server in running:
        await asyncio.to_thread(server.stop)


def _tenant_client(channel: Channel, server: RunningNexus, token: str, tenant: str | None) -> ChannelClient:
    """`channel`'s client on `tenant`'s route (the platform's when None)."""
    address = None
    if tenant is not None:
        mcp = server.mcp_url.removesuffix("/mcp")
        address = TenantAddress(host=f"{tenant}.{BASE}", prefix=tenant, mcp_url=f"{mcp}/t/{tenant}/mcp")
    return client_for(channel, server.api_url, server.mcp_url, token, tenant=address)


async def _tenant_start(
    http: httpx2.AsyncClient, server: RunningNexus, protocol: str, channel: Channel, tenant: str
) -> str:
    """The provider address of a sign-on begun on `tenant`'s route: the browser starts on the
    tenant's subdomain (API, MCP); the CLI starts it itself on its prefix."""
    if channel is Channel.CLI:
        begun = await http.post(
            f"{server.api_url}/cli/v1/auth/sso/{protocol}/start",
            json={"return_to": LOOPBACK_RETURN, "code_challenge": CHALLENGE},
            headers={"x-nexus-tenant": tenant},
        )
        assert begun.status_code == 200, begun.text
        url: str = begun.json()["url"]
        return url
    query = urlencode({"channel": channel.value})
    start = await http.get(
        f"{server.api_url}/auth/sso/{protocol}/start?{query}", headers={"host": f"{tenant}.{BASE}"}
    )
    assert start.status_code == 302, start.text
    return start.headers["location"]


def _oidc_provider_of(oidc_provider: OidcProvider) -> EnterpriseAuthProvider:
    return EnterpriseAuthProvider(
        sso_endpoint=oidc_provider.issuer(),
        oidc_client_id="nexus-app",
        oidc_client_secret=CLIENT_SECRET,
        oidc_redirect_uri=oidc_provider.app_redirect_uri,
        oidc_role_map=ROLE_MAP,
    )


async def _oidc_to_callback(
    http: httpx2.AsyncClient, server: RunningNexus, channel: Channel, tenant: str
) -> str:
    """Sign on as alice, begun on `tenant`'s route; the callback address the provider sends back to."""
    authorize = await _tenant_start(http, server, "oidc", channel, tenant)
    idp = await http.get(f"{authorize}&{urlencode({'login_hint': 'alice'})}")
    assert idp.status_code == 302, idp.text
    return idp.headers["location"]


async def _assert_a_session_of(tenant: str, channel: Channel, server: RunningNexus, token: str) -> None:
    """The token runs the tenant's workflow in that tenant, and nothing on the platform's route."""
    here = await _tenant_client(channel, server, token, tenant).execute("where", {})
    assert here.ok, here
    assert here.body["outputs"]["where"]["result"] == tenant
    on_platform = await _tenant_client(channel, server, token, None).execute("add", {"a": 1, "b": 2})
    assert on_platform.outcome is Outcome.NOT_FOUND, on_platform


async def test_an_oidc_sign_on_begun_on_a_tenants_route_logs_a_member_in_to_that_tenant(
    tenant_sso_app: StartTenantApp, oidc_provider: OidcProvider, channel: Channel
) -> None:
    server = await tenant_sso_app(oidc_provider.app_port, _oidc_provider_of(oidc_provider))
    async with httpx2.AsyncClient(timeout=10) as http:
        callback = await _oidc_to_callback(http, server, channel, "acme")
        assert callback.startswith(oidc_provider.app_redirect_uri + "?")  # the platform's address
        stranger = await http.get(callback)
        # The first sign-on made the account; an administrator makes it a member of acme.
        await server.app.update_user("alice", tenants=["acme"])
        member = await http.get(await _oidc_to_callback(http, server, channel, "acme"))
        grant = await _finish(http, server, member, channel, prefix="acme")

    assert stranger.status_code == 401, stranger.text
    assert stranger.json()["code"] == "not_authenticated"
    assert "acme" not in stranger.text
    assert grant["channel"] == channel.value
    await _assert_a_session_of("acme", channel, server, grant["access_token"])
    records = await server.app.audit_log(workflow="_auth", limit=50)
    assert any(r.reason == "not a member of tenant acme" for r in records), records
    assert any(r.outcome is Outcome.SUCCESS and r.reason == "logged in by oidc" for r in records)


async def test_a_callback_on_another_tenants_route_than_the_sign_on_began_on_is_refused_and_audited(
    tenant_sso_app: StartTenantApp, oidc_provider: OidcProvider
) -> None:
    server = await tenant_sso_app(oidc_provider.app_port, _oidc_provider_of(oidc_provider))
    async with httpx2.AsyncClient(timeout=10) as http:
        callback = await _oidc_to_callback(http, server, Channel.API, "acme")
        elsewhere = await http.get(callback, headers={"host": f"globex.{BASE}"})
        again = await http.get(callback)  # the sign-on is spent, on its own route as well

    assert elsewhere.status_code == 401, elsewhere.text
    assert elsewhere.json()["code"] == "not_authenticated"
    assert "acme" not in elsewhere.text
    assert again.status_code == 401
    records = await server.app.audit_log(tenant_id="globex", limit=20)
    refused = [r for r in records if r.outcome is Outcome.UNAUTHENTICATED]
    assert [r.reason for r in refused] == [ELSEWHERE]
    assert "alice" not in [user.username for user in await server.app.list_users()]  # nothing linked


@pytest.mark.parametrize(
    ("change", "status", "code", "reason"),
    [
        ("suspend", 403, "tenant_suspended", "Tenant 'acme' is suspended; its calls are refused."),
        ("delete", 401, "not_authenticated", "single sign-on begun in a tenant that is gone"),
    ],
)
async def test_a_sign_on_to_a_tenant_suspended_or_deleted_before_the_callback_is_refused(
    tenant_sso_app: StartTenantApp,
    oidc_provider: OidcProvider,
    change: str,
    status: int,
    code: str,
    reason: str,
) -> None:
    server = await tenant_sso_app(oidc_provider.app_port, _oidc_provider_of(oidc_provider))
    async with httpx2.AsyncClient(timeout=10) as http:
        callback = await _oidc_to_callback(http, server, Channel.API, "acme")
        if change == "suspend":
            await server.app.suspend_tenant("acme")
        else:
            await server.app.delete_tenant("acme")
        answer = await http.get(callback)

    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code
    records = await server.app.audit_log(workflow="_auth", limit=20)
    assert any(r.reason == reason for r in records), records
    assert "alice" not in [user.username for user in await server.app.list_users()]  # nothing linked


async def test_a_saml_sign_on_begun_on_a_tenants_route_logs_a_member_in_to_that_tenant(
    tenant_sso_app: StartTenantApp, saml_idp: SamlIdp, saml_sp_keys: KeyPair, channel: Channel
) -> None:
    port = free_port()
    server = await tenant_sso_app(port, await _saml_provider(port, saml_sp_keys, saml_idp))
    acs = f"{server.api_url}/auth/sso/saml/callback"  # the platform's address
    async with httpx2.AsyncClient(timeout=10) as http:
        metadata = await http.get(f"{server.api_url}/auth/sso/saml/metadata")
        await asyncio.to_thread(saml_idp.register_sp, metadata.text)
        form = await _saml_form(http, await _tenant_start(http, server, "saml", channel, "acme"))
        stranger = await http.post(acs, data=form)
        await server.app.update_user("alice", tenants=["acme"])
        form = await _saml_form(http, await _tenant_start(http, server, "saml", channel, "acme"))
        grant = await _finish(http, server, await http.post(acs, data=form), channel, prefix="acme")

    assert stranger.status_code == 401, stranger.text
    assert "acme" not in stranger.text
    await _assert_a_session_of("acme", channel, server, grant["access_token"])
    records = await server.app.audit_log(workflow="_auth", limit=50)
    assert any(r.reason == "not a member of tenant acme" for r in records), records


async def test_nexus_login_sso_with_a_tenant_prefix_makes_a_session_of_that_tenant(
    tenant_sso_app: StartTenantApp, oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    """The real `nexus --tenant acme login --sso oidc --no-browser`, the provider calling back on
    the platform's address."""
    server = await tenant_sso_app(oidc_provider.app_port, _oidc_provider_of(oidc_provider))
    env = _cli_env(tmp_path)
    platform = [sys.executable, "-m", "nexus", "--url", server.api_url]
    await _nexus_login_sso(platform, env)  # makes alice's account (a platform session)
    await server.app.update_user("alice", tenants=["acme"])
    acme = [*platform, "--tenant", "acme"]
    await _nexus_login_sso(acme, env)

    ran = await _nexus(acme, env, "run", "where", "--json")
    assert ran["outputs"] == {"where": {"result": "acme"}}
    records = await server.app.audit_log(tenant_id="acme", limit=50)
    assert any(r.reason == "single sign-on started (oidc)" for r in records), records
