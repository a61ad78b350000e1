"""Abuse resistance of logins: each behaviour one test body over the login routes of the channels.

API clients log in at `/auth/login`, MCP hosts there too naming `"channel": "mcp"`, CLI users at
`/cli/v1/auth/login`. Every client here comes from 127.0.0.1 (the server trusts no forwarding
header), so the per-address and per-pair limits are shown as one address sees them.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pyotp
import pytest
from tests.e2e.conftest import StartAuthApp
from tests.e2e.identity import PASSWORD, enroll_totp

from nexus import Nexus, RunningNexus
from nexus.backends.ephemeral import MemoryEphemeralStore
from nexus.core.types import AuditRecord, Channel, Outcome
from nexus.enterprise.auth import MultiFactorAuth
from nexus.testing import client_for

Start = Callable[..., Awaitable[RunningNexus]]

WRONG = "not the password at all"
LIMIT = 3  # login_failures_per_account in the throttling tests
PER_PAIR = 5  # ThrottlePolicy.per_pair: failures per (account, address) in 15 minutes
LOCKOUT_S = 900
WRONG_LOGIN = "The username or password is wrong."
PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Sent:
    """One HTTP answer: its status, problem or grant document, headers, raw text and duration."""

    status: int
    body: dict[str, Any]
    headers: httpx2.Headers
    text: str
    seconds: float

    @property
    def code(self) -> str | None:
        return self.body.get("code")

    @property
    def shown(self) -> tuple[int, Any, Any, Any]:
        """What a refusal tells the caller, without the per-request parts (request id, retry time)."""
        return self.status, self.code, self.body.get("title"), self.body.get("detail")


def _prefix(channel: Channel) -> str:
    return "/cli/v1" if channel is Channel.CLI else ""


def _audit_channel(channel: Channel) -> str:
    # MCP hosts log in over the API's HTTP routes: the audit names the route's channel.
    return "cli" if channel is Channel.CLI else "api"


async def send(
    server: RunningNexus, path: str, body: Any = None, *, raw: bytes | None = None, token: str | None = None
) -> Sent:
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(base_url=server.api_url, timeout=30) as http:
        started = time.perf_counter()
        if raw is None:
            response = await http.post(path, json=body if body is not None else {}, headers=headers)
        else:
            response = await http.post(path, content=raw, headers=headers)
        seconds = time.perf_counter() - started
    try:
        document = response.json()
    except ValueError:
        document = {}
    return Sent(response.status_code, document, response.headers, response.text, seconds)


def for_channel(channel: Channel, body: dict[str, Any]) -> dict[str, Any]:
    """A login body as `channel`'s clients send it: MCP hosts name their channel (unless `body` does)."""
    return {"channel": "mcp", **body} if channel is Channel.MCP else body


def login_body(channel: Channel, username: Any, password: Any, **extra: Any) -> dict[str, Any]:
    return for_channel(channel, {"username": username, "password": password, **extra})


async def login(server: RunningNexus, channel: Channel, username: str, password: str = PASSWORD) -> Sent:
    return await send(server, f"{_prefix(channel)}/auth/login", login_body(channel, username, password))


async def answer_mfa(server: RunningNexus, channel: Channel, challenge_id: Any, code: str) -> Sent:
    body = {"challenge_id": challenge_id, "method": "totp", "code": code}
    return await send(server, f"{_prefix(channel)}/auth/mfa", body)


async def audit_of(server: RunningNexus, answer: Sent) -> AuditRecord:
    """The audit record of the request that gave `answer` (found by the request id it carries)."""
    request_id = answer.body.get("request_id") or answer.headers.get("x-request-id")
    records = await server.app.audit_log(limit=10_000)
    found = [r for r in records if r.request_id == request_id]
    assert len(found) == 1, (request_id, answer.body)
    return found[0]


def let_time_pass(server: RunningNexus, seconds: float) -> None:
    """Move the clock of the app's short-lived login state (lock markers, challenges) on by `seconds`.

    That store expires entries by its own monotonic clock; moving it is how a test waits 15 minutes.
    """
    assembly = server.app._assembly
    assert assembly is not None
    assert assembly.identity is not None
    store = assembly.identity.service._p.ephemeral
    assert isinstance(store, MemoryEphemeralStore), type(store)
    earlier = store._now
    store._now = lambda: earlier() + seconds


@pytest.fixture
def login_app(auth_app: StartAuthApp) -> Start:
    """`await start(users=("alice",), fast_hashing=True, mfa=False, **auth_settings)`: a served app."""

    async def start(
        *, users: tuple[str, ...] = ("alice",), fast_hashing: bool = True, mfa: bool = False, **auth: Any
    ) -> RunningNexus:
        def setup(app: Nexus) -> None:
            for name, value in auth.items():
                setattr(app.auth, name, value)
            if mfa:
                app.auth.mfa = MultiFactorAuth(methods=["totp"], required_for=["api", "cli", "mcp"])

        roles = {name: ["developer"] for name in users}
        return await auth_app(setup, users=roles, fast_hashing=fast_hashing)

    return start


async def fail(server: RunningNexus, channel: Channel, usernames: list[str], times: int) -> None:
    """Send `times` wrong passwords (cycling through `usernames`); each is a plain wrong-login answer."""
    for attempt in range(times):
        answer = await login(server, channel, usernames[attempt % len(usernames)], WRONG)
        assert answer.shown == (401, "not_authenticated", "Authentication required", WRONG_LOGIN), (
            attempt,
            answer.body,
        )


def assert_throttled(answer: Sent) -> int:
    """A 429 `login_throttled` problem whose wait is stated in the body and in Retry-After."""
    assert (answer.status, answer.code) == (429, "login_throttled"), answer.body
    assert answer.headers["content-type"].startswith(PROBLEM)
    retry_after = answer.body["retry_after"]
    assert isinstance(retry_after, int), answer.body
    assert 0 < retry_after <= LOCKOUT_S
    assert answer.headers["retry-after"] == str(retry_after)
    return retry_after


# -- throttling ---------------------------------------------------------------------------------------


async def test_after_the_allowed_wrong_passwords_even_the_right_one_is_refused_for_a_while(
    login_app: Start, channel: Channel
) -> None:
    server = await login_app(login_failures_per_account=LIMIT)
    await fail(server, channel, ["alice"], LIMIT)
    refused = await login(server, channel, "alice", PASSWORD)
    retry_after = assert_throttled(refused)
    # A locked login says nothing about the password it was given.
    assert (await login(server, channel, "alice", WRONG)).shown == refused.shown
    record = await audit_of(server, refused)
    assert (record.channel.value, record.principal_id, record.outcome, record.error_code) == (
        _audit_channel(channel),
        "login:alice",
        Outcome.RATE_LIMITED,
        "login_throttled",
    )
    assert record.reason == refused.body["detail"] == "Too many failed logins; try again later."
    let_time_pass(server, retry_after)
    assert (await login(server, channel, "alice")).status == 200


async def test_an_account_lock_spares_the_address_its_user_logged_in_from_before(
    login_app: Start, channel: Channel
) -> None:
    server = await login_app(users=("alice", "bob"), login_failures_per_account=LIMIT)
    assert (await login(server, channel, "alice")).status == 200
    # Past the account's limit but under the pair's: the account is locked, except from here.
    await fail(server, channel, ["alice"], LIMIT + 1)
    assert (await login(server, channel, "alice")).status == 200
    await fail(server, channel, ["bob"], LIMIT)
    assert_throttled(await login(server, channel, "bob"))


async def test_the_pair_limit_locks_an_account_at_an_address_it_logged_in_from_but_no_other_account(
    login_app: Start, channel: Channel
) -> None:
    server = await login_app(users=("alice", "bob"))
    assert (await login(server, channel, "alice")).status == 200
    await fail(server, channel, ["alice"], PER_PAIR)
    assert_throttled(await login(server, channel, "alice"))
    assert (await login(server, channel, "bob")).status == 200


async def test_the_address_limit_locks_every_account_at_that_address(
    login_app: Start, channel: Channel
) -> None:
    server = await login_app(login_failures_per_address=LIMIT)
    await fail(server, channel, [f"guess{n}" for n in range(LIMIT)], LIMIT)
    assert_throttled(await login(server, channel, "alice"))


async def test_an_unknown_account_locks_exactly_like_a_real_one(login_app: Start, channel: Channel) -> None:
    server = await login_app(login_failures_per_account=LIMIT)
    await fail(server, channel, ["alice", "nobody"], 2 * LIMIT)
    real = await login(server, channel, "alice")
    unknown = await login(server, channel, "nobody")
    assert real.shown == unknown.shown
    assert_throttled(real)


# -- no user enumeration ------------------------------------------------------------------------------


async def test_an_unknown_user_and_a_wrong_password_answer_alike_in_words_and_time(
    login_app: Start, channel: Channel
) -> None:
    tries = 7
    # Real argon2 parameters, so skipping the hash for an unknown user would show in the timing.
    # One try per account keeps every account and pair under its limit.
    server = await login_app(users=tuple(f"real{n}" for n in range(tries)), fast_hashing=False)
    await login(server, channel, "warm-up", WRONG)
    unknown: list[Sent] = []
    wrong: list[Sent] = []
    unhashed: list[Sent] = []  # refused before any hashing: the round trip alone
    path = f"{_prefix(channel)}/auth/login"
    for n in range(tries):
        unknown.append(await login(server, channel, f"ghost{n}", WRONG))
        wrong.append(await login(server, channel, f"real{n}", WRONG))
        unhashed.append(await send(server, path, login_body(channel, f"real{n}", 12345678)))
    shown = {a.shown for a in unknown + wrong}
    assert shown == {(401, "not_authenticated", "Authentication required", WRONG_LOGIN)}, shown
    assert {a.headers.get("www-authenticate") for a in unknown + wrong} == {'Bearer realm="nexus"'}
    unknown_s, wrong_s, bare_s = (
        statistics.median(a.seconds for a in answers) for answers in (unknown, wrong, unhashed)
    )
    assert wrong_s > 3 * bare_s, (wrong_s, bare_s)  # the hash dominates, so skipping it would show
    assert 0.5 <= unknown_s / wrong_s <= 2, (unknown_s, wrong_s)


# -- no secrets in logs, errors or the audit ----------------------------------------------------------


@dataclass
class Flow:
    """What a full login flow handed out (each a secret) and the error answers it met on the way."""

    secrets: dict[str, str]
    errors: list[Sent]


async def run_full_flow(server: RunningNexus, channel: Channel) -> Flow:
    """Enroll TOTP at login, log in again with a wrong then a right code, get a channel token, call a
    workflow with it, meet a few refusals (bad JSON, bad channel, forged bearers), log out."""
    p = _prefix(channel)
    secret, enrolled = await enroll_totp(server, channel, "alice")
    totp = pyotp.TOTP(secret)
    activation_code = totp.now()
    raw = f'{{"username": "alice", "password": "{PASSWORD}"'.encode()
    answers = [
        await send(server, f"{p}/auth/login", raw=raw),
        await send(
            server,
            f"{p}/auth/login",
            for_channel(channel, {"username": "alice", "password": PASSWORD, "channel": "bogus"}),
        ),
    ]
    due = await login(server, channel, "alice")
    code = totp.at(datetime.now(UTC) + timedelta(seconds=30))
    wrong_code = _wrong_codes(totp, 1)[0]
    answers.append(await answer_mfa(server, channel, due.body["challenge_id"], wrong_code))
    grant = await answer_mfa(server, channel, due.body["challenge_id"], code)
    assert grant.status == 200, grant.body
    session = grant.body["session_token"]
    token = await send(server, f"{p}/auth/token", {"channel": channel.value}, token=session)
    assert token.status == 200, token.body
    caller = client_for(channel, server.api_url, server.mcp_url, token.body["access_token"])
    assert (await caller.execute("add", {"a": 1, "b": 2})).ok
    answers.append(await send(server, f"{p}/auth/token", {"channel": "api"}, token=f"{session}x"))
    answers.append(await send(server, f"{p}/auth/token", {"channel": "api"}, token=secret))
    assert (await send(server, f"{p}/auth/logout", token=session)).status == 200
    answers.append(await send(server, f"{p}/auth/token", {"channel": channel.value}, token=session))
    errors = [a for a in answers if a.status >= 400]
    assert {a.status for a in errors} == {401, 422}, [a.body for a in errors]
    named = {
        "password": PASSWORD,
        "totp secret": secret,
        "activation code": activation_code,
        "login code": code,
        "wrong code": wrong_code,
        **_token_parts("enrollment session token", enrolled.body["session_token"]),
        **_token_parts("session token", session),
        **_token_parts("enrollment access token", enrolled.body["access_token"]),
        **_token_parts("login access token", grant.body["access_token"]),
        **_token_parts("channel token", token.body["access_token"]),
        **{f"recovery code {n}": c for n, c in enumerate(enrolled.body["recovery_codes"])},
    }
    return Flow(named, errors)


def _token_parts(name: str, token: str) -> dict[str, str]:
    """A token, and the part of it that is the secret (a session's secret, a JWT's signature)."""
    secret_part = token.rsplit(".", 1)[-1] if token.count(".") == 2 else token.split("_", 2)[-1]
    return {name: token, f"{name} (secret part)": secret_part}


def _leaks(places: list[tuple[str, str]], named: dict[str, str]) -> list[tuple[str, str]]:
    """(place, secret name) for every named secret found in a place's text."""
    found = set()
    for where, text in places:
        for name, value in named.items():
            # Six-digit codes count only as whole tokens: they occur by chance inside hex ids.
            if value.isdigit():
                hit = re.search(rf"(?<![0-9A-Za-z]){value}(?![0-9A-Za-z])", text) is not None
            else:
                hit = value in text
            if hit:
                found.add((where, name))
    return sorted(found)


async def test_no_secret_reaches_an_error_answer_or_an_audit_reason(
    login_app: Start, channel: Channel
) -> None:
    server = await login_app(mfa=True)
    flow = await run_full_flow(server, channel)
    places = [(f"{a.status} answer", a.text) for a in flow.errors]
    audit = await server.app.audit_log(limit=10_000)
    assert len(audit) >= 10
    places += [(f"audit of {r.action}", f"{r.reason} {r.principal_id} {r.error_code}") for r in audit]
    assert _leaks(places, flow.secrets) == []


@contextlib.contextmanager
def every_log_record(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """Capture every logger at DEBUG, those that do not propagate to the root included."""
    caplog.set_level(logging.DEBUG)
    detached: list[logging.Logger] = []
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)
        logger = logging.getLogger(name)
        if not logger.propagate:
            logger.addHandler(caplog.handler)
            detached.append(logger)
    try:
        yield caplog.records
    finally:
        for logger in detached:
            logger.removeHandler(caplog.handler)


def _record_text(record: logging.LogRecord) -> str:
    """Everything a log record could carry into a log file: message, arguments, extras, traceback."""
    formatted = logging.Formatter().format(record)
    return f"{formatted}\n{record.msg!r}\n{record.args!r}\n{record.__dict__!r}"


async def test_no_secret_reaches_a_log_record_even_at_debug(
    login_app: Start, channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    server = await login_app(mfa=True)
    # After start: serving sets some loggers' levels (uvicorn's), which this overrides.
    with every_log_record(caplog) as records:
        flow = await run_full_flow(server, channel)
    assert any(r.threadName == "nexus-server" for r in records), "no server log record was captured"
    assert _leaks([(f"log {r.name}", _record_text(r)) for r in records], flow.secrets) == []


# -- hostile bodies -----------------------------------------------------------------------------------

HOSTILE: list[tuple[str, dict[str, Any] | bytes, set[int]]] = [
    ("not JSON", b'{"username": "alice", "password": ', {422}),
    ("a JSON array", b'["alice", "pw"]', {422}),
    ("an empty body", b"", {422}),
    ("JSON nested 5000 deep", b"[" * 5000 + b"]" * 5000, {422}),
    ("invalid UTF-8", b'{"username": "alice", "password": "\xff\xfe"}', {422}),
    ("a lone surrogate", b'{"username": "\\ud800alice", "password": "pw"}', {422}),
    ("a 10 kB username", {"username": "a" * 10_240, "password": PASSWORD}, {401, 422}),
    ("a NUL in the username", {"username": "ali\x00ce", "password": PASSWORD}, {401, 422}),
    ("a 1 MB password", {"username": "alice", "password": "p" * 1_048_576}, {413, 422}),
    ("a number as password", {"username": "alice", "password": 12345678}, {422}),
    ("null as password", {"username": "alice", "password": None}, {422}),
    ("a list as password", {"username": "alice", "password": [PASSWORD]}, {422}),
    ("an object as password", {"username": "alice", "password": {"value": PASSWORD}}, {422}),
    ("true as password", {"username": "alice", "password": True}, {422}),
    ("a number as username", {"username": 42, "password": PASSWORD}, {422}),
    ("no password", {"username": "alice"}, {422}),
    ("a list as channel", {"username": "alice", "password": PASSWORD, "channel": ["mcp"]}, {422}),
]


async def test_a_hostile_login_body_is_refused_as_an_audited_problem_never_a_500(
    login_app: Start, channel: Channel
) -> None:
    server = await login_app()
    path = f"{_prefix(channel)}/auth/login"
    for case, body, statuses in HOSTILE:
        if isinstance(body, bytes):
            answer = await send(server, path, raw=body)
        else:
            answer = await send(server, path, for_channel(channel, body))
        assert answer.status in statuses, (case, answer.status, answer.text[:300])
        assert answer.headers["content-type"].startswith(PROBLEM), case
        assert answer.code, (case, answer.body)
        assert answer.body.get("detail"), (case, answer.body)
        # Refused as it arrives, before any password hashing.
        assert answer.seconds < 1.0, (case, answer.seconds)
        record = await audit_of(server, answer)
        assert record.outcome is not Outcome.SUCCESS, (case, record)
        assert record.error_code == answer.code, (case, record)
    assert (await login(server, channel, "alice")).status == 200


async def test_a_login_body_with_fields_besides_the_credentials_is_refused(
    login_app: Start, channel: Channel
) -> None:
    server = await login_app()
    body = login_body(channel, "alice", PASSWORD, roles=["admin"], is_admin=True)
    answer = await send(server, f"{_prefix(channel)}/auth/login", body)
    assert (answer.status, answer.code) == (422, "invalid_input"), answer.body
    assert answer.headers["content-type"].startswith(PROBLEM)
    assert (await audit_of(server, answer)).outcome is Outcome.INVALID_INPUT


# -- second-factor challenges -------------------------------------------------------------------------


def _live_codes(totp: pyotp.TOTP) -> set[str]:
    now = datetime.now(UTC)
    return {totp.at(now + timedelta(seconds=30 * step)) for step in range(-2, 4)}


def _wrong_codes(totp: pyotp.TOTP, count: int) -> list[str]:
    live = _live_codes(totp)
    candidates = (f"{n:06d}" for n in range(123_456, 1_000_000, 97_531))
    return [c for c in candidates if c not in live][:count]


async def test_a_challenge_cannot_be_guessed_outlasted_or_renewed_for_more_guesses(
    login_app: Start, channel: Channel
) -> None:
    server = await login_app(mfa=True)
    secret, _ = await enroll_totp(server, channel, "alice")
    totp = pyotp.TOTP(secret)
    right = totp.at(datetime.now(UTC) + timedelta(seconds=30))
    dead = (await login(server, channel, "alice")).body["challenge_id"]
    for attempt, code in enumerate(_wrong_codes(totp, 5), start=1):
        answer = await answer_mfa(server, channel, dead, code)
        assert (answer.status, answer.code) == (401, "not_authenticated"), answer.body
        assert ("Too many wrong codes" in answer.body["detail"]) is (attempt == 5), (attempt, answer.body)
    gone = [await answer_mfa(server, channel, dead, right)]
    for guess in (secrets.token_urlsafe(24), secrets.token_urlsafe(12), "x", 123456, None, dead[:-1] + "A"):
        gone.append(await answer_mfa(server, channel, guess, right))
    # Wrong codes are failed logins: a fresh challenge does not bring fresh guesses.
    retry_after = assert_throttled(await login(server, channel, "alice"))
    let_time_pass(server, retry_after)
    expired = (await login(server, channel, "alice")).body["challenge_id"]
    let_time_pass(server, 301)
    gone.append(await answer_mfa(server, channel, expired, right))
    used = (await login(server, channel, "alice")).body["challenge_id"]
    assert (await answer_mfa(server, channel, used, right)).status == 200  # the code was right all along
    gone.append(await answer_mfa(server, channel, used, right))
    assert {a.shown for a in gone} == {gone[0].shown}, [a.body for a in gone]
    assert gone[0].shown[:2] == (401, "not_authenticated")
    assert all("challenge_id" not in a.body for a in gone)
    assert len({dead, expired, used}) == 3
    assert min(len(c) for c in (dead, expired, used)) >= 32
    reasons = [r.reason for r in await server.app.audit_log(limit=10_000)]
    assert "Too many wrong codes; log in again." in reasons
