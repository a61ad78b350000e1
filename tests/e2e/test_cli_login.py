"""`nexus login`, `whoami`, `logout` and `users` as a user runs them: the real console script in a
subprocess against a served app with auth on, credentials cached in a private config directory."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pyotp
import pytest
from tests.e2e.conftest import build_app

from nexus import Nexus, RunningNexus
from nexus.channels.cli.credentials import Credentials, CredentialStore
from nexus.enterprise.auth import MultiFactorAuth

PASSWORD = "correct horse battery"  # a test user's password


def fast_hashing(app: Nexus) -> None:
    app.auth.password_time_cost = 1
    app.auth.password_memory_kib = 1024


def add_users(app: Nexus, users: Sequence[tuple[str, Sequence[str]]]) -> None:
    async def create() -> None:
        for username, roles in users:
            await app.create_user(username, PASSWORD, roles=roles)

    asyncio.run(create())


@dataclass
class Cli:
    """The `nexus` console script pointed at one server, with its own config directory."""

    url: str
    config: Path

    def __call__(
        self, *args: str, stdin: str = "", cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603  # our own interpreter and console script
            self.command(*args),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=cwd,
            timeout=60,
            check=False,
        )

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "nexus", "--url", self.url, *args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
        env["NEXUS_CONFIG_DIR"] = str(self.config)
        return env

    def login(
        self, username: str = "alice", password: str = PASSWORD, *more: str
    ) -> subprocess.CompletedProcess[str]:
        return self(
            "login", "--username", username, "--password-stdin", stdin="\n".join((password, *more)) + "\n"
        )

    def cached(self) -> Credentials | None:
        return CredentialStore(self.config).load(self.url)


@pytest.fixture(scope="module")
def migrated_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state database with its schema in place, copied by each test (migrating one takes seconds)."""
    path = tmp_path_factory.mktemp("template") / "state.db"
    app = Nexus(state_url=f"sqlite:///{path}", enable_auth=True)
    assert asyncio.run(app.list_users()) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.db"]
    return path


@pytest.fixture
def serve_auth(tmp_path: Path, migrated_state: Path) -> Iterator[Callable[..., tuple[RunningNexus, Cli]]]:
    """`serve_auth(mfa=None, users=[("alice", ["analyst"])], **auth)`: an app with auth on, its users
    created before start (password `PASSWORD`), and the CLI pointed at it."""
    running: list[RunningNexus] = []

    def start(
        *,
        mfa: MultiFactorAuth | None = None,
        users: Sequence[tuple[str, Sequence[str]]] = (("alice", ["analyst"]),),
        **auth: Any,
    ) -> tuple[RunningNexus, Cli]:
        state = shutil.copyfile(migrated_state, tmp_path / f"state-{len(running)}.db")
        app = build_app(f"sqlite:///{state}", enable_auth=True)
        fast_hashing(app)
        app.auth.mfa = mfa
        for name, value in auth.items():
            setattr(app.auth, name, value)
        add_users(app, users)
        server = app.start_in_thread()
        running.append(server)
        return server, Cli(server.api_url, tmp_path / "config")

    yield start
    for server in running:
        server.stop()


def run_add(cli: Cli) -> subprocess.CompletedProcess[str]:
    return cli("run", "add", "-p", "a=1", "-p", "b=2", "--json")


def test_password_login_caches_a_private_session_that_run_uses(
    serve_auth: Callable[..., tuple[RunningNexus, Cli]],
) -> None:
    _, cli = serve_auth()
    login = cli.login()
    assert login.returncode == 0, login.stderr
    assert "Logged in as alice (roles analyst) until " in login.stderr

    done = run_add(cli)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"add": {"result": 3}}

    cached = cli.cached()
    assert cached is not None
    assert cached.username == "alice"
    for shown in (login.stdout, login.stderr, done.stdout, done.stderr):
        assert cached.session_token not in shown
        assert cached.access_token not in shown
    assert stat.S_IMODE((cli.config / "credentials.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o700


def test_wrong_password_exits_77_and_caches_nothing(
    serve_auth: Callable[..., tuple[RunningNexus, Cli]],
) -> None:
    _, cli = serve_auth()
    done = cli.login("alice", "wrong horse battery")
    assert done.returncode == 77
    assert "The username or password is wrong." in done.stderr
    assert PASSWORD not in done.stderr + done.stdout
    assert cli.cached() is None


def test_a_login_that_cannot_be_kept_ends_its_session_on_the_server(
    serve_auth: Callable[..., tuple[RunningNexus, Cli]], tmp_path: Path
) -> None:
    server, cli = serve_auth()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may write here: no place for a login
    done = Cli(cli.url, shared).login()
    assert done.returncode == 2, done.stderr
    assert "Unsafe config directory" in done.stderr
    records = asyncio.run(server.app.audit_log(workflow="_auth"))
    assert [r.action.value for r in records][:2] == ["logout", "login"]  # newest first


def test_run_without_a_login_exits_77_and_says_to_log_in(
    serve_auth: Callable[..., tuple[RunningNexus, Cli]],
) -> None:
    _, cli = serve_auth()
    done = run_add(cli)
    assert done.returncode == 77
    assert f"nexus --url {cli.url} login" in done.stderr


def test_whoami_shows_the_user_roles_and_auth_time(
    serve_auth: Callable[..., tuple[RunningNexus, Cli]],
) -> None:
    _, cli = serve_auth()
    assert cli.login().returncode == 0
    text = cli("whoami")
    assert text.returncode == 0, text.stderr
    assert "User: alice" in text.stdout
    assert "Roles: analyst" in text.stdout
    assert "Authenticated: " in text.stdout

    document = json.loads(cli("whoami", "--json").stdout)
    assert document["username"] == "alice"
    assert document["roles"] == ["analyst"]
    assert document["channel"] == "cli"
    assert datetime.fromisoformat(document["auth_time"]) <= datetime.now(UTC)


def test_logout_ends_the_session_on_the_server_and_run_then_asks_for_login(
    serve_auth: Callable[..., tuple[RunningNexus, Cli]],
) -> None:
    server, cli = serve_auth()
    assert cli.login().returncode == 0
    cached = cli.cached()
    assert cached is not None

    done = cli("logout")
    assert done.returncode == 0, done.stderr
    assert "The session has ended on the server." in done.stdout
    assert cli.cached() is None
    # The server refuses the access token the cache held: the session is over, not only forgotten.
    answer = httpx2.get(
        f"{server.api_url}/cli/v1/auth/whoami",
        headers={"authorization": f"Bearer {cached.access_token}"},
        timeout=10,
    )
    assert answer.status_code == 401

    refused = run_add(cli)
    assert refused.returncode == 77
    assert f"nexus --url {cli.url} login" in refused.stderr


def test_logout_succeeds_locally_when_the_server_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cli = Cli(f"http://127.0.0.1:{port}", tmp_path / "config")
    grant = {
        "access_token": "a.b.c",
        "expires_in": 900,
        "session_expires_at": "2030-01-01T00:00:00+00:00",
        "user": {"id": "local:1", "username": "alice", "roles": []},
        "session_token": "nxs_x_y",
    }
    CredentialStore(cli.config).save(cli.url, Credentials.from_grant(grant, time.time()))

    done = cli("logout")
    assert done.returncode == 0, done.stderr
    assert f"Cannot reach the Nexus server at {cli.url}" in done.stdout
    assert "stays valid there until" in done.stdout
    assert cli.cached() is None


@pytest.mark.slow
def test_login_enrolls_totp_then_logs_in_with_codes_and_refuses_a_replayed_one(
    serve_auth: Callable[..., tuple[RunningNexus, Cli]],
) -> None:
    _, cli = serve_auth(mfa=MultiFactorAuth(methods=["totp"]))
    login = subprocess.Popen(  # noqa: S603  # our own interpreter and console script
        cli.command("login", "--username", "alice", "--password-stdin"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env(),
    )
    assert login.stdin is not None
    assert login.stderr is not None
    login.stdin.write(PASSWORD + "\n")
    login.stdin.flush()
    conversation = []
    for line in login.stderr:  # the login prints the provisioning URI, then waits for the first code
        conversation.append(line)
        if line.startswith("otpauth://"):
            break
    uri = conversation[-1].strip()
    assert uri.startswith("otpauth://totp/"), "".join(conversation)
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    step = totp.timecode(datetime.now(UTC))
    out, err = login.communicate(totp.generate_otp(step) + "\n", timeout=60)
    assert login.returncode == 0, "".join(conversation) + err
    assert "Logged in as alice" in err
    recovery_codes = out.split()
    assert len(recovery_codes) == 10

    again = cli.login("alice", PASSWORD, totp.generate_otp(step + 1))
    assert again.returncode == 0, again.stderr
    assert run_add(cli).returncode == 0

    replayed = cli.login("alice", PASSWORD, totp.generate_otp(step + 1))
    assert replayed.returncode == 77
    assert "already used" in replayed.stderr

    by_recovery = cli(
        "login",
        "-u",
        "alice",
        "--password-stdin",
        "--method",
        "recovery",
        stdin=f"{PASSWORD}\n{recovery_codes[0]}\n",
    )
    assert by_recovery.returncode == 0, by_recovery.stderr


def test_a_due_second_factor_without_a_code_is_a_usage_error(
    serve_auth: Callable[..., tuple[RunningNexus, Cli]],
) -> None:
    _, cli = serve_auth(mfa=MultiFactorAuth(methods=["totp"]))
    done = cli.login()  # the password only: no line left for the enrollment code
    assert done.returncode == 2
    assert "otpauth://" in done.stderr
    assert cli.cached() is None


def test_reauth_renews_the_auth_time_of_the_cached_session(
    serve_auth: Callable[..., tuple[RunningNexus, Cli]],
) -> None:
    _, cli = serve_auth()
    assert cli.login().returncode == 0
    first = cli.cached()
    assert first is not None

    wrong = cli("login", "--reauth", "--password-stdin", stdin="wrong horse battery\n")
    assert wrong.returncode == 77
    done = cli("login", "--reauth", "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    after = cli.cached()
    assert after is not None
    assert after.session_token == first.session_token
    assert after.auth_time is not None
    assert first.auth_time is not None
    assert datetime.fromisoformat(after.auth_time) > datetime.fromisoformat(first.auth_time)
    assert run_add(cli).returncode == 0


@pytest.mark.slow
def test_an_expired_or_refused_access_token_is_renewed_from_the_session(
    serve_auth: Callable[..., tuple[RunningNexus, Cli]],
) -> None:
    _, cli = serve_auth(access_token_duration=1)
    assert cli.login().returncode == 0
    first = cli.cached()
    assert first is not None
    time.sleep(1.1)

    done = run_add(cli)
    assert done.returncode == 0, done.stderr
    renewed = cli.cached()
    assert renewed is not None
    assert renewed.access_token != first.access_token
    assert renewed.session_token == first.session_token

    # A token the cache still trusts but the server refuses: the call is retried once with a new one.
    store = CredentialStore(cli.config)
    store.save(cli.url, replace(renewed, access_token="not-a-token", access_expires_at=time.time() + 3600))
    done = run_add(cli)
    assert done.returncode == 0, done.stderr
    after = cli.cached()
    assert after is not None
    assert after.access_token not in ("not-a-token", renewed.access_token)


@pytest.mark.slow
def test_users_created_on_a_module_app_are_listed_and_can_log_in(
    tmp_path: Path, migrated_state: Path
) -> None:
    state = shutil.copyfile(migrated_state, tmp_path / "users.db")
    (tmp_path / "userapp.py").write_text(
        "from nexus import Nexus\n"
        f"app = Nexus(state_url='sqlite:///{state}', enable_auth=True)\n"
        "app.auth.password_time_cost = 1\n"
        "app.auth.password_memory_kib = 1024\n"
    )
    cli = Cli("http://127.0.0.1:9", tmp_path / "config")
    created = cli(
        "users",
        "create",
        "userapp:app",
        "carol",
        "--role",
        "ops",
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    assert "Created user carol" in created.stdout

    listed = cli("users", "list", "userapp:app", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)["users"]
    assert (row["username"], row["roles"], row["disabled"]) == ("carol", ["admin", "ops"], False)
    assert PASSWORD not in listed.stdout
    assert "password_hash" not in row

    duplicate = cli(
        "users", "create", "userapp:app", "carol", "--password-stdin", stdin=PASSWORD + "\n", cwd=tmp_path
    )
    assert duplicate.returncode == 2
    assert "already exists" in duplicate.stderr

    app = build_app(f"sqlite:///{state}", enable_auth=True)
    fast_hashing(app)
    server = app.start_in_thread()
    try:
        login = Cli(server.api_url, cli.config).login("carol")
    finally:
        server.stop()
    assert login.returncode == 0, login.stderr
    assert "Logged in as carol (roles admin, ops)" in login.stderr
