"""`nexus login`'s conversation: password, second factor, enrollment, and the browser sign-on.

Secrets come from options, stdin lines (for scripts) or hidden prompts (on a terminal), and are
never echoed. Single sign-on listens once on a loopback port for the browser to bring back a
one-time code, bound to this process by a PKCE verifier. Imports typer, the standard library and
the CLI's light modules.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qs, urlsplit

import typer

from nexus.channels.cli.problem import Failure
from nexus.errors import AuthenticationError, InvalidInputError

if TYPE_CHECKING:
    from nexus.channels.cli.client import CliClient

USAGE = InvalidInputError.exit_code
SSO_WAIT_S = 300.0
_DUE = ("mfa_required", "mfa_enrollment_required")
_PREFERRED = ("totp", "sms", "recovery")
_LABELS = {
    "totp": "Code from your authenticator app",
    "sms": "Code from the text message",
    "recovery": "Recovery code",
}


def say(text: str) -> None:
    """A line of the conversation, on stderr (stdout is kept for what scripts capture)."""
    typer.echo(text, err=True)


@dataclass
class Answers:
    """Where the secrets come from: an option, the next stdin line, or a hidden prompt."""

    interactive: bool
    password_stdin: bool
    code: str | None = field(default=None, repr=False)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)

    def line(self, what: str) -> str:
        text = self.stdin.readline()
        if not text:
            raise Failure("Missing input", f"Expected {what} on the next line of stdin.", USAGE)
        return text.rstrip("\r\n")

    def ask(self, label: str, *, hidden: bool, option: str) -> str:
        if not self.interactive:
            raise Failure("Missing input", f"stdin is not a terminal: give {option}.", USAGE)
        answer: str = typer.prompt(label, hide_input=hidden, err=True)
        return answer

    def password(self) -> str:
        if self.password_stdin:
            return self.line("the password")
        return self.ask("Password", hidden=True, option="--password-stdin")

    def one_time_code(self, label: str) -> str:
        """--code (once), else a prompt on a terminal, else the next stdin line (for scripts)."""
        if self.code is not None:
            code, self.code = self.code, None
            return code
        if self.password_stdin or not self.interactive:
            return self.line("the second-factor code (or give --code)").strip()
        typed: str = typer.prompt(label, err=True)
        return typed.strip()


@dataclass(frozen=True)
class SecondFactor:
    """How to answer a second-factor challenge: `--method` and, to enroll by text message, `--phone`."""

    method: str | None = None
    phone: str | None = None


def is_due(failure: Failure) -> bool:
    return failure.problem is not None and failure.problem.get("code") in _DUE


def finish(client: CliClient, due: Failure, answers: Answers, factor: SecondFactor) -> dict[str, Any]:
    """Complete a login that answered `mfa_required` or `mfa_enrollment_required`; the grant."""
    problem = due.problem or {}
    challenge_id = str(problem.get("challenge_id", ""))
    offered = [str(m) for m in problem.get("methods", []) if isinstance(m, str)]
    if problem.get("code") == "mfa_enrollment_required":
        return _enroll(client, challenge_id, offered, answers, factor)
    method = _pick(offered, factor.method)

    def attempt() -> dict[str, Any]:
        if method == "sms":
            say(f"Sent a code to {client.send_sms_code(challenge_id)}.")
        return client.answer_mfa(challenge_id, method, answers.one_time_code(_LABELS[method]))

    return _retrying(attempt, answers)


def _pick(offered: list[str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in offered or wanted not in _LABELS:
            usable = ", ".join(m for m in offered if m in _LABELS) or "none"
            raise Failure("Method not available", f"--method {wanted}: this login offers {usable}.", USAGE)
        return wanted
    for method in _PREFERRED:
        if method in offered:
            return method
    raise Failure(
        "Second factor needs a browser",
        "This account's second factor is a hardware key; use --method recovery or sign in with --sso.",
        AuthenticationError.exit_code,
    )


def _retrying(attempt: Callable[[], dict[str, Any]], answers: Answers) -> dict[str, Any]:
    """Run `attempt`; on a terminal, a wrong code may be typed again while the challenge lasts."""
    while True:
        try:
            return attempt()
        except Failure as wrong:
            kept = wrong.problem is not None and wrong.problem.get("challenge_id")
            if not (answers.interactive and not answers.password_stdin and kept):
                raise
            say(wrong.detail or wrong.title)


def _enroll(
    client: CliClient, challenge_id: str, offered: list[str], answers: Answers, factor: SecondFactor
) -> dict[str, Any]:
    method = factor.method or next((m for m in ("totp", "sms") if m in offered), None)
    if method not in ("totp", "sms") or method not in offered:
        usable = ", ".join(offered) or "none"
        raise Failure(
            "Enrollment needs a browser",
            f"A second factor must be enrolled first; the methods on offer here ({usable}) cannot be "
            "enrolled from a terminal.",
            AuthenticationError.exit_code,
        )
    say("This account needs a second factor before it can log in; enrolling one now.")
    phone = None
    if method == "sms":
        phone = factor.phone or answers.ask(
            "Phone number (international form, like +15551234567)", hidden=False, option="--phone"
        )
    enrollment = client.enroll(challenge_id, method, phone)
    if method == "totp":
        say("Add this account to your authenticator app (scan the address as a QR code, or open it):")
        say(str(enrollment.get("provisioning_uri", "")))
        say(f"Or type the key by hand: {enrollment.get('secret', '')}")
    else:
        say(f"Sent a code to {enrollment.get('phone', 'the phone')}.")

    def attempt() -> dict[str, Any]:
        return client.activate(challenge_id, answers.one_time_code("First code, to confirm"))

    grant = _retrying(attempt, answers)
    codes = grant.pop("recovery_codes", None) or []
    if codes:
        say(
            "Recovery codes, each good once if you lose the device; store them now, they are not shown again:"
        )
        for code in codes:
            typer.echo(str(code))
    return grant


# -- single sign-on ----------------------------------------------------------------------------


class _CallbackServer(HTTPServer):
    state: str
    code: str | None
    arrived: threading.Event


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _CallbackServer

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        # The state proves the browser is coming back from the sign-on this command started.
        if parts.path != "/callback" or query.get("state") != [self.server.state]:
            self._reply(404, "This is not the sign-in callback.")
            return
        code = (query.get("code") or [""])[0]
        if not code:
            self._reply(400, "The sign-in did not send a code back.")
            return
        if self.server.code is None:
            self.server.code = code
            self.server.arrived.set()
        self._reply(200, "Sign-in received. You can close this tab and go back to the terminal.")

    def _reply(self, status: int, text: str) -> None:
        body = f"<!doctype html><title>Nexus sign-in</title><p>{text}</p>\n".encode()
        self.send_response(status)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.send_header("cache-control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: the request line carries the one-time code."""


class LoopbackReceiver:
    """A one-shot listener on 127.0.0.1 (random port) for the browser's return with `?code=`.

    Use as a context manager: the server thread stops and the port closes on exit.
    """

    def __init__(self, *, timeout_s: float = SSO_WAIT_S) -> None:
        self._timeout_s = timeout_s
        self._server = _CallbackServer(("127.0.0.1", 0), _CallbackHandler)
        self._server.state = secrets.token_urlsafe(16)
        self._server.code = None
        self._server.arrived = threading.Event()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    @property
    def redirect_uri(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/callback?state={self._server.state}"

    def __enter__(self) -> LoopbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def wait(self) -> str:
        """The code the browser brought back; a `Failure` when none came in time."""
        if not self._server.arrived.wait(self._timeout_s) or self._server.code is None:
            raise Failure(
                "Sign-in timed out",
                f"The browser did not come back within {self._timeout_s:g} s; run nexus login --sso again.",
                AuthenticationError.exit_code,
            )
        return self._server.code


def code_challenge(verifier: str) -> str:
    """The S256 challenge of a PKCE verifier (RFC 7636): base64url(SHA-256(verifier)), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sso_login(
    client: CliClient,
    protocol: str,
    *,
    open_browser: bool,
    answers: Answers,
    factor: SecondFactor,
    timeout_s: float = SSO_WAIT_S,
) -> dict[str, Any]:
    """Sign on in the browser and exchange the code it brings back; the grant.

    The sign-on starts on the client's route, so with `nexus --tenant` it is a login to that
    tenant (the server keeps the tenant with the pending sign-on, wherever the provider calls back).
    """
    # The code passes through the browser and a port any local program can race for; the server
    # exchanges it only against the verifier, which never leaves this process.
    verifier = secrets.token_urlsafe(48)
    with LoopbackReceiver(timeout_s=timeout_s) as receiver:
        url = client.begin_sso(protocol, receiver.redirect_uri, code_challenge(verifier))
        opened = False
        if open_browser:
            import webbrowser

            opened = webbrowser.open(url)
        say("Opened your browser to sign in. If it did not open, visit:" if opened else "To sign in, visit:")
        say(url)
        code = receiver.wait()
    try:
        return client.exchange_sso_code(code, verifier)
    except Failure as failure:
        if not is_due(failure):
            raise
        return finish(client, failure, answers, factor)
