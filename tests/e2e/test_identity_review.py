"""Findings of an adversarial review of identity, against served apps and the real test servers.

Tests marked `xfail(strict=True)` show a defect: they assert what identity must do and fail today;
fixed, they pass, strict xfail reports that, and the mark comes off. Unmarked tests pin properties
the review checked and found sound.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import httpx2
import pytest
from tests.e2e.conftest import CHANNELS, StartAuthApp
from tests.e2e.identity import PASSWORD, login, post
from tests.support.ldap import PASSWORDS, LdapServer
from tests.support.oidc import CLIENT_SECRET, OidcProvider
from tests.unit.core.auth.rig import IdentityRig, build_rig

from nexus import Nexus, RunningNexus
from nexus.backends.auth.oidc import OidcClient
from nexus.backends.ephemeral import MemoryEphemeralStore
from nexus.core.auth.policy import ThrottlePolicy
from nexus.core.auth.throttle import LoginThrottle
from nexus.core.types import Channel
from nexus.enterprise.auth import EnterpriseAuthProvider
from nexus.errors import NexusError
from nexus.testing.clients import ChannelClient

ClientFactory = Callable[..., ChannelClient]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
FULL_WIDTH_CAROL = "".join(chr(ord(c) + 0xFEE0) for c in "carol")  # NFKC folds it to "carol"


@pytest.fixture
def served(auth_app: StartAuthApp) -> Callable[..., Any]:
    """`await start(configure, api_port=0)`: an auth-on app with user alice, served in a thread."""

    async def start(configure: Callable[[Nexus], None] | None = None, *, api_port: int = 0) -> RunningNexus:
        return await auth_app(configure, api_port=api_port)

    return start


# -- single sign-on: where the browser is sent back -------------------------------------------


def _oidc(oidc_provider: OidcProvider) -> Callable[[Nexus], None]:
    def configure(app: Nexus) -> None:
        app.auth.provider = EnterpriseAuthProvider(
            sso_endpoint=oidc_provider.issuer(),
            oidc_client_id="nexus-app",
            oidc_client_secret=CLIENT_SECRET,
            oidc_redirect_uri=oidc_provider.app_redirect_uri,
        )

    return configure


def browser_destination(base: str, location: str) -> tuple[str | None, int | None]:
    """(host, port) a browser goes to for `location` on a page at `base`, per the WHATWG URL rules
    for http(s): tab and newline dropped, a backslash before the query or fragment is a slash."""
    cleaned = re.sub(r"[\t\n\r]", "", location).strip("".join(map(chr, range(0x21))))
    cut = min((i for i in (cleaned.find("?"), cleaned.find("#")) if i >= 0), default=len(cleaned))
    head, tail = cleaned[:cut], cleaned[cut:]
    if urlsplit(head).scheme.lower() in ("", "http", "https"):
        # Special schemes: a backslash is a slash, and any run of slashes opens the authority.
        head = re.sub(r"^(https?:)?/{2,}", r"\1//", head.replace("\\", "/"), flags=re.IGNORECASE)
    target = urlsplit(urljoin(base, head + tail))
    return target.hostname, target.port


def test_browser_destination_reads_locations_as_a_browser_does() -> None:
    base = "http://127.0.0.1:8000/auth/sso/oidc/callback"
    assert browser_destination(base, "/done?code=x") == ("127.0.0.1", 8000)
    assert browser_destination(base, "//evil.example/x") == ("evil.example", None)
    assert browser_destination(base, "/\\evil.example/x?code=1") == ("evil.example", None)
    assert browser_destination(base, "http://evil.example\\@127.0.0.1/?code=1") == ("evil.example", None)
    assert browser_destination(base, "/\\/evil.example/x") == ("evil.example", None)
    assert browser_destination(base, "http://127.0.0.1:9/cb?a=\\b") == ("127.0.0.1", 9)
    assert browser_destination(base, "/a//b\\c") == ("127.0.0.1", 8000)


SMUGGLED_RETURNS = [
    "/\\evil.example/steal",
    "/\\/evil.example/steal",
    "http://evil.example\\@127.0.0.1/steal",
]


@pytest.mark.parametrize("return_to", SMUGGLED_RETURNS)
async def test_single_sign_on_never_sends_the_browser_or_its_code_to_another_host(
    served: Callable[..., Any], oidc_provider: OidcProvider, return_to: str
) -> None:
    server = await served(_oidc(oidc_provider), api_port=oidc_provider.app_port)
    async with httpx2.AsyncClient(timeout=10) as http:
        query = urlencode({"channel": "cli", "return_to": return_to})
        start = await http.get(f"{server.api_url}/auth/sso/oidc/start?{query}")
        if start.status_code == 422:
            return  # refused up front: the right answer
        assert start.status_code == 302, start.text
        idp = await http.get(f"{start.headers['location']}&{urlencode({'login_hint': 'bob'})}")
        callback = await http.get(idp.headers["location"])
        assert callback.status_code == 302, callback.text
        location = callback.headers["location"]
        host, _ = browser_destination(str(callback.request.url), location)
        if host not in LOOPBACK:
            # What the other host can do with the code it was handed:
            code = dict(parse_qsl(urlsplit(location.replace("\\", "/")).query))["code"]
            stolen = await http.post(f"{server.api_url}/auth/sso/exchange", json={"code": code})
            assert stolen.status_code != 200, (
                f"the browser went to {host} with the one-time code, and the code opened "
                f"{stolen.json()['user']['username']}'s session there"
            )


async def test_a_return_to_with_control_characters_is_refused_up_front(
    served: Callable[..., Any], oidc_provider: OidcProvider
) -> None:
    server = await served(_oidc(oidc_provider), api_port=oidc_provider.app_port)
    async with httpx2.AsyncClient(timeout=10) as http:
        for return_to in ("/done\r\nSet-Cookie: planted=1", "/done\x00"):
            query = urlencode({"channel": "cli", "return_to": return_to})
            start = await http.get(f"{server.api_url}/auth/sso/oidc/start?{query}")
            assert start.status_code == 422, (return_to, start.status_code)


ACCEPTED_RETURNS = [
    "/after/login",
    "http://127.0.0.1:9/callback?state=x",
    "HTTP://[::1]:9/cb",
    "http://localhost:9/",
]
REFUSED_RETURNS = [
    "//evil.example/x",
    "///evil.example/x",
    "\\\\evil.example/x",
    "http:/\\evil.example",
    "https://evil.example/",
    "http://127.0.0.1.evil.example/",
    "http://127.0.0.1:9@evil.example/",
    "http://evil.example#@127.0.0.1/",
    "http://evil.example?@127.0.0.1/",
    "/\t/evil.example",
    "javascript:alert(1)",
    "data:text/html,x",
]


async def test_single_sign_on_returns_only_to_own_paths_and_loopback(
    served: Callable[..., Any], oidc_provider: OidcProvider
) -> None:
    """Checked and sound: the other tricky forms (scheme-relative, userinfo, fragments, lookalike
    hosts, other schemes, upper-case schemes, IPv6 loopback) are judged right."""
    server = await served(_oidc(oidc_provider), api_port=oidc_provider.app_port)
    async with httpx2.AsyncClient(timeout=10) as http:
        for return_to in ACCEPTED_RETURNS + REFUSED_RETURNS:
            # A loopback return_to comes with the program's code challenge (the CLI sends one).
            challenge = {} if return_to.startswith("/") else {"code_challenge": "A" * 43}
            query = urlencode({"channel": "cli", "return_to": return_to, **challenge})
            start = await http.get(f"{server.api_url}/auth/sso/oidc/start?{query}")
            expected = 302 if return_to in ACCEPTED_RETURNS else 422
            assert start.status_code == expected, (return_to, start.text)


# -- single sign-on: unauthenticated state crowding out logins --------------------------------


async def test_anonymous_sign_on_starts_cannot_stop_password_logins(oidc_provider: OidcProvider) -> None:
    # The app's store holds 100 000 entries and a pending sign-on lives 600 s: about 170 anonymous
    # GETs a second keep it full. Scaled down here to a store of 50 entries.
    base = build_rig()
    store = MemoryEphemeralStore(monotonic=base.clock.monotonic, max_entries=50)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(IdentityRig) if f.init}
    fields.update(
        ephemeral=store,
        throttle=LoginThrottle(base.counters, store, base.clock, ThrottlePolicy()),
        sso={"oidc": OidcClient(oidc_provider.settings(), store)},
    )
    rig = IdentityRig(**fields)
    await rig.add_user("alice")
    for _ in range(60):
        try:
            await rig.service.begin_sso("oidc", Channel.API, "")
        except NexusError:
            break  # the sign-on starts may be limited; logins must not be
    grant = await rig.login("alice")
    assert grant.session.username == "alice"


# -- LDAP: one account under many spellings ----------------------------------------------------


async def test_a_locked_directory_account_stays_locked_under_other_spellings(
    served: Callable[..., Any], ldap_server: LdapServer
) -> None:
    settings = ldap_server.settings()
    options = {
        f"ldap_{f.name}": getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name != "url"
    }

    def configure(app: Nexus) -> None:
        app.auth.provider = EnterpriseAuthProvider(ldap_server=settings.url, **options)

    server = await served(configure)
    for _ in range(5):  # the per-(account, address) limit
        wrong = await login(server, Channel.API, "carol", "not-her-password")
        assert wrong.status == 401, wrong.body
    locked = await login(server, Channel.API, "carol", PASSWORDS["carol"])
    assert locked.status == 429, locked.body
    for spelling in (" carol", "carol  ", FULL_WIDTH_CAROL):
        again = await login(server, Channel.API, spelling, PASSWORDS["carol"])
        assert again.status == 429, (spelling, again.status, again.body.get("user"))


# -- token answers ------------------------------------------------------------------------------


async def test_answers_carrying_tokens_are_never_stored_by_caches(served: Callable[..., Any]) -> None:
    server = await served()
    async with httpx2.AsyncClient(base_url=server.api_url, timeout=10) as http:
        grant = await http.post("/auth/login", json={"username": "alice", "password": PASSWORD})
        assert grant.status_code == 200, grant.text
        token = await http.post(
            "/auth/token",
            json={"channel": "mcp"},
            headers={"authorization": f"Bearer {grant.json()['session_token']}"},
        )
        assert token.status_code == 200, token.text
    for answer in (grant, token):
        assert "no-store" in answer.headers.get("cache-control", ""), answer.request.url


# -- properties checked and found sound ---------------------------------------------------------


async def test_with_api_keys_disabled_a_valid_key_is_refused_on_every_channel(
    served: Callable[..., Any], client: ClientFactory
) -> None:
    def configure(app: Nexus) -> None:
        app.auth.provider = EnterpriseAuthProvider(enable_api_keys=False)

    server = await served(configure)
    issued = await server.app.create_api_key("ci", roles=["developer"])
    for channel in CHANNELS:
        reply = await client(channel, server, issued.plaintext).execute("add", {"a": 1, "b": 2})
        assert not reply.ok, (channel, reply)
        assert reply.code == "not_authenticated", (channel, reply)
    # X-API-Key, the other way a key travels, is refused too.
    async with httpx2.AsyncClient(base_url=server.api_url, timeout=10) as http:
        answer = await http.post(
            "/workflows/add/execute",
            json={"inputs": {"a": 1, "b": 2}},
            headers={"x-api-key": issued.plaintext},
        )
    assert answer.status_code == 401, answer.text
    # Logins still work with keys off.
    assert (await login(server, Channel.API, "alice")).status == 200


async def test_a_session_token_is_refused_as_an_access_token_on_every_channel(
    served: Callable[..., Any], client: ClientFactory
) -> None:
    server = await served()
    grant = await login(server, Channel.API, "alice")
    session_token = grant.body["session_token"]
    for channel in CHANNELS:
        reply = await client(channel, server, session_token).execute("add", {"a": 1, "b": 2})
        assert not reply.ok, (channel, reply)
        assert reply.code == "not_authenticated", (channel, reply)


async def test_a_channel_token_cannot_mint_other_tokens_or_step_up(served: Callable[..., Any]) -> None:
    """Only the session token opens /auth/token and /auth/reauth; a leaked channel token does not."""
    server = await served()
    grant = await login(server, Channel.API, "alice")
    access = grant.body["access_token"]
    minted = await post(server, "/auth/token", {"channel": "mcp"}, token=access)
    assert minted.status == 401, minted.body
    stepped = await post(server, "/auth/reauth", {"password": PASSWORD}, token=access)
    assert stepped.status == 401, stepped.body
