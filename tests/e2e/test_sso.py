"""Single sign-on through a served app, against the real OIDC provider and SAML IdP processes.

The browser is played with plain HTTP: start at `/auth/sso/{protocol}/start`, follow the identity
provider, come back to the app's callback. API and MCP logins get their grant from the callback;
the CLI's comes back to its loopback `return_to` as a one-time code, exchanged at
`/cli/v1/auth/sso/exchange`. Each protocol's login then calls a workflow on that channel.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx2
import pytest
from tests.e2e.conftest import StartAuthApp
from tests.support.oidc import CLIENT_SECRET, OidcProvider, free_port
from tests.support.saml import KeyPair, SamlIdp

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.enterprise.auth import EnterpriseAuthProvider
from nexus.testing.clients import ChannelClient

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
    http: httpx2.AsyncClient, server: RunningNexus, callback: httpx2.Response, channel: Channel
) -> dict[str, Any]:
    """The grant, from the callback (API, MCP) or through the CLI's one-time code."""
    if channel is not Channel.CLI:
        assert callback.status_code == 200, callback.text
        grant: dict[str, Any] = callback.json()
        return grant
    assert callback.status_code == 302, callback.text
    location = callback.headers["location"]
    assert location.startswith(LOOPBACK_RETURN + "?code=")
    code = dict(parse_qsl(urlsplit(location).query))["code"]
    exchange = f"{server.api_url}/cli/v1/auth/sso/exchange"
    exchanged = await http.post(exchange, json={"code": code, "code_verifier": VERIFIER})
    assert exchanged.status_code == 200, exchanged.text
    again = await http.post(exchange, json={"code": code, "code_verifier": VERIFIER})
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


async def test_nexus_login_sso_signs_on_through_the_browser_and_its_loopback_listener(
    sso_app: Callable[..., Any], oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    """The real `nexus login --sso oidc --no-browser`: the test plays the browser at the URL it prints."""
    import json
    import os
    import subprocess
    import sys

    provider = EnterpriseAuthProvider(
        sso_endpoint=oidc_provider.issuer(),
        oidc_client_id="nexus-app",
        oidc_client_secret=CLIENT_SECRET,
        oidc_role_map=ROLE_MAP,
    )
    server = await sso_app(oidc_provider.app_port, provider)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env["NEXUS_CONFIG_DIR"] = str(tmp_path / "config")
    base = [sys.executable, "-m", "nexus", "--url", server.api_url]
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
        idp = await browser.get(url)
        assert idp.status_code == 302, idp.text  # Nexus sends the browser to the provider
        back = await browser.get(f"{idp.headers['location']}&{urlencode({'login_hint': 'alice'})}")
        callback = await browser.get(back.headers["location"])  # Nexus's callback
        assert callback.status_code == 302, callback.text
        assert callback.headers["location"].startswith("http://127.0.0.1:")  # the CLI's listener
        landed = await browser.get(callback.headers["location"])
        assert landed.status_code == 200
    _, err = await asyncio.wait_for(login.communicate(), timeout=30)
    assert login.returncode == 0, err.decode()

    async def cli(*args: str) -> tuple[int, Any]:
        process = await asyncio.create_subprocess_exec(
            *base, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err.decode()
        return process.returncode, json.loads(out)

    _, who = await cli("whoami", "--json")
    assert sorted(who["roles"]) == ["admin", "developer"]
    _, ran = await cli("run", "add", "-p", "a=2", "-p", "b=3", "--json")
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
