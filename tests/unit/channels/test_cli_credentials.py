"""The CLI's login cache: a private file keyed by server URL, rewritten whole, tolerant of damage,
never kept where others can write; the client's token renewal from the cached session; the loopback
listener of `nexus login --sso` and the PKCE verifier that binds its code to this process."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest

from nexus.channels.cli.client import CliClient
from nexus.channels.cli.credentials import (
    CachedLogin,
    Credentials,
    CredentialStore,
    config_dir,
    normalize_url,
)
from nexus.channels.cli.login import Answers, LoopbackReceiver, SecondFactor, sso_login
from nexus.channels.cli.problem import Failure

URL = "http://127.0.0.1:8000"
NOW = 1_000_000.0


def grant(access: str = "access-1", session: str = "nxs_s_secret", expires_in: int = 900) -> dict[str, Any]:
    return {
        "access_token": access,
        "token_type": "Bearer",
        "channel": "cli",
        "expires_in": expires_in,
        "expires_at": "2030-01-01T00:15:00+00:00",
        "session_expires_at": "2030-01-01T08:00:00+00:00",
        "user": {"id": "local:1", "username": "alice", "roles": ["analyst"]},
        "auth_time": "2030-01-01T00:00:00+00:00",
        "session_token": session,
    }


def login_for(access: str = "access-1", expires_in: int = 900, now: float = NOW) -> Credentials:
    return Credentials.from_grant(grant(access, expires_in=expires_in), now)


@pytest.fixture
def store(tmp_path: Path) -> CredentialStore:
    return CredentialStore(tmp_path / "config" / "nexus")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable: the modes must not depend on it."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("open_umask")
def test_the_file_is_0600_in_a_0700_directory_whatever_the_umask(store: CredentialStore) -> None:
    store.save(URL, login_for())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700


@pytest.mark.usefixtures("open_umask")
def test_missing_parent_directories_are_created_private_too(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "home" / ".config" / "nexus")
    store.save(URL, login_for())
    for directory in (tmp_path / "home", tmp_path / "home" / ".config", store.directory):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_an_existing_directory_keeps_its_mode_and_a_loose_file_is_made_private(
    store: CredentialStore,
) -> None:
    store.directory.mkdir(parents=True)
    store.directory.chmod(0o755)
    store.path.write_text("{}")
    store.path.chmod(0o644)
    store.save(URL, login_for())
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o755
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o770, 0o702], ids=["tmp-like", "open", "group", "others"])
def test_a_directory_others_can_write_is_refused_and_left_as_it_was(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    store = CredentialStore(shared)
    with pytest.raises(Failure) as caught:
        store.save(URL, login_for())
    assert caught.value.exit_code == 2
    assert str(shared) in str(caught.value)
    assert "NEXUS_CONFIG_DIR" in str(caught.value)
    assert stat.S_IMODE(shared.stat().st_mode) == mode
    assert list(shared.iterdir()) == []
    with pytest.raises(Failure):
        store.delete(URL)


def test_a_login_file_planted_in_a_shared_directory_is_not_used(tmp_path: Path) -> None:
    private = CredentialStore(tmp_path / "private")
    private.save(URL, login_for("planted-access"))
    private.directory.chmod(0o777)
    assert private.load(URL) is None
    private.directory.chmod(0o700)
    assert private.load(URL) is not None


def test_a_config_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    taken = tmp_path / "nexus"
    taken.write_text("not a directory")
    with pytest.raises(Failure) as caught:
        CredentialStore(taken).save(URL, login_for())
    assert "not a directory" in str(caught.value)
    assert taken.read_text() == "not a directory"


def test_a_save_replaces_the_file_whole_and_leaves_no_temporary_file(store: CredentialStore) -> None:
    store.save(URL, login_for("access-1"))
    before = store.path.stat().st_ino
    store.save(URL, login_for("access-2"))
    assert store.path.stat().st_ino != before  # a new file renamed over the old one, not rewritten in place
    assert sorted(p.name for p in store.directory.iterdir()) == [".credentials.lock", "credentials.json"]
    cached = store.load(URL)
    assert cached is not None
    assert cached.access_token == "access-2"


def test_logins_are_kept_per_normalized_server_url(store: CredentialStore) -> None:
    store.save("HTTP://LocalHost:80/", login_for("plain"))
    store.save("http://localhost:8000", login_for("other-port"))
    store.save("https://nexus.example/base/", login_for("tls"))

    first = store.load("http://localhost")
    assert first is not None
    assert first.access_token == "plain"
    second = store.load("http://LOCALHOST:8000/")
    assert second is not None
    assert second.access_token == "other-port"
    third = store.load("https://nexus.example:443/base")
    assert third is not None
    assert third.access_token == "tls"

    assert store.delete("http://localhost/")
    assert store.load("http://localhost") is None
    assert store.load("http://localhost:8000") is not None
    assert not store.delete("http://localhost")
    assert sorted(json.loads(store.path.read_text())["servers"]) == [
        "http://localhost:8000",
        "https://nexus.example/base",
    ]


def test_normalized_urls_keep_the_path_and_ipv6_brackets() -> None:
    assert normalize_url("http://[::1]:8000/") == "http://[::1]:8000"
    assert normalize_url("https://Host.Example:443/nexus/") == "https://host.example/nexus"


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all {",
        b"\xff\xfe\x00",
        b"[1, 2, 3]",
        b'{"version": 1, "servers": []}',
        b'{"version": 1, "servers": {"http://127.0.0.1:8000": {"username": "alice"}}}',
        b'{"version": 1, "servers": {"http://127.0.0.1:8000": {"username": "a", "user_id": "u", '
        b'"roles": "analyst", "session_token": "s", "session_expires_at": "", "access_token": "t", '
        b'"access_issued_at": 1, "access_expires_at": 2}}}',
    ],
    ids=[
        "broken-json",
        "not-text",
        "a-list",
        "servers-not-a-map",
        "entry-missing-fields",
        "roles-not-a-list",
    ],
)
def test_a_damaged_file_reads_as_no_login_and_the_next_save_replaces_it(
    store: CredentialStore, content: bytes
) -> None:
    store.directory.mkdir(parents=True)
    store.path.write_bytes(content)
    assert store.load(URL) is None
    store.save(URL, login_for())
    cached = store.load(URL)
    assert cached is not None
    assert cached.username == "alice"


def test_tokens_never_appear_in_the_repr() -> None:
    text = repr(login_for("access-secret"))
    assert "access-secret" not in text
    assert "nxs_s_secret" not in text
    assert "alice" in text


def test_the_config_directory_follows_the_environment(tmp_path: Path) -> None:
    assert config_dir({"NEXUS_CONFIG_DIR": "/a", "XDG_CONFIG_HOME": "/b"}) == Path("/a")
    assert config_dir({"XDG_CONFIG_HOME": "/b"}) == Path("/b/nexus")
    assert config_dir({}) == Path.home() / ".config" / "nexus"


def test_an_access_token_is_renewed_30_s_before_it_expires_or_at_half_life_if_shorter() -> None:
    long_lived = login_for(expires_in=900)
    assert long_lived.is_access_fresh(NOW + 869)
    assert not long_lived.is_access_fresh(NOW + 871)
    short_lived = login_for(expires_in=10)
    assert short_lived.is_access_fresh(NOW + 4)
    assert not short_lived.is_access_fresh(NOW + 6)


def test_a_step_up_answer_keeps_the_cached_session() -> None:
    step_up = {k: v for k, v in grant("access-2").items() if k != "session_token"}
    renewed = Credentials.from_grant(step_up, NOW + 5, previous=login_for())
    assert (renewed.session_token, renewed.access_token) == ("nxs_s_secret", "access-2")


# -- the client's token renewal ----------------------------------------------------------------


class FakeServer:
    """Answers like the CLI routes: `/auth/token` mints from the live session, calls check tokens."""

    def __init__(self) -> None:
        self.live_session = "nxs_s_secret"
        self.valid = {"access-1"}
        self.minted = 0
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ") or None
        self.seen.append((request.url.path, bearer))
        if request.url.path == "/cli/v1/auth/token":
            if bearer != self.live_session:
                return self.refuse("not_authenticated")
            self.minted += 1
            token = f"access-minted-{self.minted}"
            self.valid.add(token)
            return httpx2.Response(200, json={"access_token": token, "channel": "cli", "expires_in": 900})
        if bearer not in self.valid:
            return self.refuse("not_authenticated")
        return httpx2.Response(200, json={"workflows": []})

    @staticmethod
    def refuse(code: str) -> httpx2.Response:
        body = {"title": "Authentication required", "detail": "no", "status": 401, "code": code}
        return httpx2.Response(401, json=body, headers={"content-type": "application/problem+json"})


def client_for(server: FakeServer, store: CredentialStore, now: float = NOW) -> CliClient:
    source = CachedLogin(store, URL, clock=lambda: now)
    return CliClient(URL, source=source, transport=httpx2.MockTransport(server))


def test_a_fresh_cached_token_is_sent_as_is(store: CredentialStore) -> None:
    server = FakeServer()
    store.save(URL, login_for("access-1"))
    with client_for(server, store) as client:
        client.list_workflows()
    assert server.seen == [("/cli/v1/workflows", "access-1")]


def test_an_expiring_token_is_renewed_from_the_session_before_the_call(store: CredentialStore) -> None:
    server = FakeServer()
    store.save(URL, login_for("access-1"))
    with client_for(server, store, now=NOW + 880) as client:
        client.list_workflows()
    assert server.seen == [
        ("/cli/v1/auth/token", "nxs_s_secret"),
        ("/cli/v1/workflows", "access-minted-1"),
    ]
    cached = store.load(URL)
    assert cached is not None
    assert cached.access_token == "access-minted-1"


def test_a_refused_token_is_renewed_once_and_the_call_retried(store: CredentialStore) -> None:
    server = FakeServer()
    server.valid.clear()  # the server no longer takes access-1 although it looks fresh here
    store.save(URL, login_for("access-1"))
    with client_for(server, store) as client:
        client.list_workflows()
    assert [path for path, _ in server.seen] == [
        "/cli/v1/workflows",
        "/cli/v1/auth/token",
        "/cli/v1/workflows",
    ]


def test_an_ended_session_forgets_the_login_and_says_to_log_in(store: CredentialStore) -> None:
    server = FakeServer()
    server.valid.clear()
    server.live_session = "nxs_other_session"
    store.save(URL, login_for("access-1"))
    with client_for(server, store) as client, pytest.raises(Failure) as caught:
        client.list_workflows()
    assert caught.value.exit_code == 77
    assert f"nexus --url {URL} login" in str(caught.value)
    assert store.load(URL) is None


def test_without_a_cached_login_a_refusal_says_to_log_in(store: CredentialStore) -> None:
    server = FakeServer()
    with client_for(server, store) as client, pytest.raises(Failure) as caught:
        client.list_workflows()
    assert server.seen == [("/cli/v1/workflows", None)]
    assert caught.value.exit_code == 77
    assert f"nexus --url {URL} login" in str(caught.value)


def test_a_fixed_token_is_never_swapped_for_the_cached_login(store: CredentialStore) -> None:
    server = FakeServer()
    store.save(URL, login_for("access-1"))
    source = CachedLogin(store, URL, clock=lambda: NOW)
    with (
        CliClient(URL, token="nxk_fixed", source=source, transport=httpx2.MockTransport(server)) as client,
        pytest.raises(Failure) as caught,
    ):
        client.list_workflows()
    assert server.seen == [("/cli/v1/workflows", "nxk_fixed")]
    assert caught.value.exit_code == 77


# -- the single sign-on loopback listener ------------------------------------------------------


def test_the_loopback_listener_receives_the_code_once_then_closes() -> None:
    with LoopbackReceiver(timeout_s=10) as receiver:
        redirect = receiver.redirect_uri
        assert redirect.startswith("http://127.0.0.1:")
        port = int(redirect.split(":")[2].split("/")[0])
        stray = httpx2.get(redirect.replace("state=", "state=x"), params={"code": "forged"}, timeout=5)
        assert stray.status_code == 404
        answer = httpx2.get(redirect + "&code=one-time-code-123", timeout=5)
        assert answer.status_code == 200
        assert "close this tab" in answer.text
        assert receiver.wait() == "one-time-code-123"
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_the_loopback_listener_gives_up_after_its_timeout() -> None:
    with LoopbackReceiver(timeout_s=0.05) as receiver, pytest.raises(Failure) as caught:
        receiver.wait()
    assert caught.value.exit_code == 77
    assert "nexus login --sso" in str(caught.value)


# -- the code binding of `nexus login --sso` ---------------------------------------------------


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class SsoServer:
    """Plays the server: starts each sign-on (keeping its challenge and return address, and the
    tenant prefix each call came by), and trades the code for a grant only against the verifier
    it was made from."""

    def __init__(self, start_answer: dict[str, Any] | None = None) -> None:
        self.challenges: list[str] = []
        self.verifiers: list[str] = []
        self.returns: dict[str, str] = {}
        self.prefixes: list[str | None] = []
        self._start_answer = start_answer

    def browse(self, url: str) -> bool:
        """The browser at the provider: after the sign-on, it lands on `return_to` with a code."""
        state = dict(parse_qsl(urlsplit(url).query))["state"]
        landed = httpx2.get(f"{self.returns[state]}&code=code-{state}", timeout=5)
        assert landed.status_code == 200
        return True

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.prefixes.append(request.headers.get("x-nexus-tenant"))
        if request.url.path == "/cli/v1/auth/sso/oidc/start":
            assert set(body) == {"return_to", "code_challenge"}
            self.challenges.append(body["code_challenge"])
            state = str(len(self.challenges))
            self.returns[state] = body["return_to"]
            answer = self._start_answer
            if answer is None:
                answer = {"url": f"https://idp.example/authorize?state={state}"}
            return httpx2.Response(200, json=answer)
        assert request.url.path == "/cli/v1/auth/sso/exchange"
        assert set(body) == {"code", "code_verifier"}
        self.verifiers.append(body["code_verifier"])
        if s256(body["code_verifier"]) != self.challenges[-1]:
            return FakeServer.refuse("not_authenticated")
        return httpx2.Response(200, json=grant())


def test_sso_login_exchanges_the_code_with_the_verifier_of_the_challenge_it_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = SsoServer()
    monkeypatch.setattr("webbrowser.open", server.browse)
    answers, factor = Answers(interactive=False, password_stdin=False), SecondFactor()
    with CliClient(URL, transport=httpx2.MockTransport(server)) as client:
        first = sso_login(client, "oidc", open_browser=True, answers=answers, factor=factor, timeout_s=10)
        sso_login(client, "oidc", open_browser=True, answers=answers, factor=factor, timeout_s=10)
    assert first["session_token"] == "nxs_s_secret"
    assert [s256(v) for v in server.verifiers] == server.challenges
    assert all(len(c) == 43 and "=" not in c for c in server.challenges)
    assert all(len(v) >= 43 for v in server.verifiers)
    assert server.verifiers[0] != server.verifiers[1]  # a fresh verifier for every sign-on
    assert all(to.startswith("http://127.0.0.1:") for to in server.returns.values())


def test_sso_login_with_a_tenant_starts_and_exchanges_on_that_tenants_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = SsoServer()
    monkeypatch.setattr("webbrowser.open", server.browse)
    answers, factor = Answers(interactive=False, password_stdin=False), SecondFactor()
    with CliClient(URL, transport=httpx2.MockTransport(server), tenant="acme") as client:
        sso_login(client, "oidc", open_browser=True, answers=answers, factor=factor, timeout_s=10)
    assert server.prefixes == ["acme", "acme"]  # the start binds the tenant; the exchange follows it


@pytest.mark.parametrize("answer", [{}, {"url": 3}, {"url": "file:///etc/passwd"}])
def test_a_sign_on_start_without_a_web_address_fails_before_any_browser_opens(
    monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any]
) -> None:
    server = SsoServer(start_answer=answer)
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    answers, factor = Answers(interactive=False, password_stdin=False), SecondFactor()
    with (
        CliClient(URL, transport=httpx2.MockTransport(server)) as client,
        pytest.raises(Failure, match="provider's address"),
    ):
        sso_login(client, "oidc", open_browser=True, answers=answers, factor=factor, timeout_s=10)
    assert opened == []
