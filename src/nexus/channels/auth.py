"""The login conversation over HTTP: `/auth/*` for the API channel, `/cli/v1/auth/*` for the CLI.

Each route parses, hands the step to `IdentityService` through `Pipeline.account` (so every step,
refusals included, is rate-limited, audited and metered) and renders the answer. A second factor
that is due answers 401 problem+json with code `mfa_required` and a `challenge_id`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from nexus.channels import codec
from nexus.channels.asgi import HotRoute, HttpAnswer, HttpCall, ok, problem
from nexus.core.auth.service import SSO_UNKNOWN, Grant, IdentityService, LoginRefusedError
from nexus.core.pipeline import Pipeline
from nexus.core.types import Action, Channel, Invocation
from nexus.errors import AuthenticationError, InvalidInputError, NexusError

_SSO_CODE_TTL_S = 120
_MAX_RETURN_TO = 2048
_UNSAFE_IN_URL = re.compile(r"[\\\x00-\x20\x7f]")
_RETURN_TO_RULE = "return_to must be a path on this server or a loopback address."
_CODE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
# Answers of the login conversation carry tokens: no cache may keep them (RFC 6749 5.1).
_PRIVATE = (("cache-control", "no-store"), ("pragma", "no-cache"))
_BODY_LIMIT = 65_536


class AuthRoutes:
    """The `/auth` routes of one channel."""

    def __init__(
        self,
        pipeline: Pipeline,
        identity: IdentityService,
        channel: Channel,
        *,
        jwks: Callable[[], dict[str, Any]],
        return_hosts: frozenset[str],
    ) -> None:
        self._pipeline = pipeline
        self._identity = identity
        self._channel = channel
        self._jwks = jwks
        self._return_hosts = return_hosts

    def routes(self, prefix: str) -> list[HotRoute]:
        p = f"{prefix}/auth"
        routes = [
            HotRoute("POST", f"{p}/login", self.login),
            HotRoute("POST", f"{p}/mfa", self.mfa),
            HotRoute("POST", f"{p}/mfa/sms", self.mfa_sms),
            HotRoute("POST", f"{p}/mfa/hardware-key", self.mfa_hardware_key),
            HotRoute("POST", f"{p}/mfa/enroll", self.enroll),
            HotRoute("POST", f"{p}/mfa/activate", self.activate),
            HotRoute("POST", f"{p}/token", self.token),
            HotRoute("POST", f"{p}/reauth", self.reauth),
            HotRoute("POST", f"{p}/logout", self.logout),
            HotRoute("GET", f"{p}/whoami", self.whoami),
            HotRoute("POST", f"{p}/sso/exchange", self.sso_exchange),
        ]
        if self._channel is Channel.CLI:
            # The CLI names its tenant by a header no browser sends: it starts the sign-on itself.
            routes.append(HotRoute("POST", f"{p}/sso/{{protocol}}/start", self.sso_begin))
        if self._channel is Channel.API:
            routes += [
                HotRoute("GET", f"{p}/sso/{{protocol}}/start", self.sso_start),
                HotRoute("GET", f"{p}/sso/{{protocol}}/callback", self.sso_callback),
                HotRoute("POST", f"{p}/sso/{{protocol}}/callback", self.sso_callback),
                HotRoute("GET", f"{p}/sso/{{protocol}}/metadata", self.sso_metadata),
                HotRoute("GET", "/.well-known/jwks.json", self.jwks),
            ]
        return routes

    # -- plumbing ----------------------------------------------------------------------------------

    def _invocation(self, call: HttpCall, action: Action) -> Invocation:
        return Invocation(
            request_id=call.request_id,
            channel=self._channel,
            workflow="",
            inputs={},
            credential=call.credential,
            client_addr=call.client_addr,
            action=action,
            route=call.route(self._channel),
            trace_parent=call.trace_parent,
        )

    async def _step(
        self,
        call: HttpCall,
        action: Action,
        step: Callable[[Any, dict[str, Any]], Awaitable[Any]],
        fields: frozenset[str] = frozenset(),
    ) -> HttpAnswer:
        """Read the JSON body (only `fields` allowed), run `step(subject, body)` as an audited
        account step, answer."""
        invocation = self._invocation(call, action)

        async def run(subject: Any) -> Any:
            raw = await call.body(_BODY_LIMIT)
            body = codec.loads_object(raw, what="The body") if raw.strip() else {}
            unknown = sorted(set(body) - fields)
            if unknown:
                # Nothing a caller sends besides these reaches identity: no "roles" or "admin" smuggling.
                names = ", ".join(repr(name[:32]) for name in unknown[:5])
                allowed = ", ".join(sorted(fields)) or "nothing"
                raise InvalidInputError(f"Unknown fields {names}; this step takes {allowed}.")
            return await step(subject, body)

        try:
            document = await self._pipeline.account(invocation, run)
        except NexusError as error:
            return private(problem(error, call.request_id, call.path))
        return private(ok(document, call.request_id))

    def _bearer(self, call: HttpCall) -> str:
        credential = call.credential
        if credential is None or credential.scheme != "bearer":
            raise AuthenticationError("Send the session token (or a channel token) as a bearer token.")
        return credential.secret

    def _grant_document(self, grant: Grant, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        session, access = grant.session, grant.access
        document: dict[str, Any] = {
            "access_token": access.token,
            "token_type": "Bearer",
            "channel": access.channel.value,
            "expires_in": access.lifetime_s,
            "expires_at": access.expires_at.isoformat(),
            "session_expires_at": session.expires_at.isoformat(),
            "user": {"id": session.user_id, "username": session.username, "roles": sorted(session.roles)},
            "auth_time": session.auth_time.isoformat(),
        }
        if grant.session_token:
            document["session_token"] = grant.session_token
        if extra:
            document.update(extra)
        return document

    def _channel_named(self, body: Mapping[str, Any]) -> Channel:
        """The body's "channel", this route's channel when it names none."""
        try:
            return Channel(body.get("channel", self._channel.value))
        except ValueError:
            raise InvalidInputError(
                f"channel must be one of {', '.join(c.value for c in Channel)}."
            ) from None

    def _target_channel(self, body: Mapping[str, Any]) -> Channel:
        """The channel a login is for: the route's, or (on the API) the one the body names, so an
        MCP host can log in over HTTP for a token whose audience is MCP."""
        channel = self._channel_named(body)
        if channel is not self._channel and self._channel is not Channel.API:
            raise InvalidInputError(f"Log in for {channel.value} at /auth/login.")
        return channel

    # -- first factor ------------------------------------------------------------------------------

    async def login(self, call: HttpCall) -> HttpAnswer:
        async def step(subject: Any, body: dict[str, Any]) -> Any:
            username, password = body.get("username"), body.get("password")
            if isinstance(username, str):
                subject.principal_id = f"login:{username[:128]}"
            if not isinstance(username, str) or not isinstance(password, str):
                raise InvalidInputError('The body must be {"username": "...", "password": "..."}.')
            channel = self._target_channel(body)
            grant = await self._identity.login(
                username, password, channel, call.client_addr, tenant_id=subject.tenant_id
            )
            subject.principal_id = grant.session.user_id
            subject.reason = f"logged in by {grant.session.method} for {channel.value}"
            return self._grant_document(grant)

        return await self._step(call, Action.LOGIN, step, frozenset({"username", "password", "channel"}))

    async def reauth(self, call: HttpCall) -> HttpAnswer:
        async def step(subject: Any, body: dict[str, Any]) -> Any:
            grant = await self._identity.reauthenticate(
                self._bearer(call), body.get("password"), self._channel, call.client_addr
            )
            subject.principal_id = grant.session.user_id
            subject.reason = "re-authenticated"
            return self._grant_document(grant)

        return await self._step(call, Action.REAUTH, step, frozenset({"password"}))

    # -- second factor -----------------------------------------------------------------------------

    async def mfa(self, call: HttpCall) -> HttpAnswer:
        async def step(subject: Any, body: dict[str, Any]) -> Any:
            subject.principal_id = await self._identity.challenge_owner(body.get("challenge_id"))
            method = body.get("method", "totp")
            answer = body.get("response") if method == "hardware_key" else body.get("code")
            if not isinstance(method, str) or answer is None:
                raise InvalidInputError(
                    'The body must be {"challenge_id", "method", "code"} (or "response").'
                )
            grant = await self._identity.answer(
                str(body.get("challenge_id", "")), method, answer, tenant_id=subject.tenant_id
            )
            subject.principal_id = grant.session.user_id
            subject.reason = f"second factor {method} passed"
            return self._grant_document(grant)

        return await self._step(
            call, Action.MFA, step, frozenset({"challenge_id", "method", "code", "response"})
        )

    async def mfa_sms(self, call: HttpCall) -> HttpAnswer:
        async def step(subject: Any, body: dict[str, Any]) -> Any:
            subject.principal_id = await self._identity.challenge_owner(body.get("challenge_id"))
            masked = await self._identity.send_sms_code(str(body.get("challenge_id", "")))
            subject.reason = "text-message code sent"
            return {"sent_to": masked}

        return await self._step(call, Action.MFA, step, frozenset({"challenge_id"}))

    async def mfa_hardware_key(self, call: HttpCall) -> HttpAnswer:
        async def step(subject: Any, body: dict[str, Any]) -> Any:
            subject.principal_id = await self._identity.challenge_owner(body.get("challenge_id"))
            return {"options": await self._identity.hardware_key_options(str(body.get("challenge_id", "")))}

        return await self._step(call, Action.MFA, step, frozenset({"challenge_id"}))

    async def enroll(self, call: HttpCall) -> HttpAnswer:
        async def step(subject: Any, body: dict[str, Any]) -> Any:
            subject.principal_id = await self._identity.challenge_owner(body.get("challenge_id"))
            phone = body.get("phone")
            enrollment = await self._identity.enroll(
                str(body.get("challenge_id", "")),
                str(body.get("method", "totp")),
                phone=phone if isinstance(phone, str) else None,
            )
            subject.reason = f"enrolling {enrollment.kind.value}"
            details = {k: v for k, v in enrollment.details.items() if k != "challenge"}
            return {"factor_id": enrollment.factor_id, "method": enrollment.kind.value, **details}

        return await self._step(call, Action.ENROLL, step, frozenset({"challenge_id", "method", "phone"}))

    async def activate(self, call: HttpCall) -> HttpAnswer:
        async def step(subject: Any, body: dict[str, Any]) -> Any:
            subject.principal_id = await self._identity.challenge_owner(body.get("challenge_id"))
            answer = body.get("response", body.get("code"))
            grant, codes = await self._identity.activate(
                str(body.get("challenge_id", "")), answer, tenant_id=subject.tenant_id
            )
            subject.principal_id = grant.session.user_id
            subject.reason = "second factor enrolled"
            return self._grant_document(grant, {"recovery_codes": codes})

        return await self._step(call, Action.ENROLL, step, frozenset({"challenge_id", "code", "response"}))

    # -- sessions ----------------------------------------------------------------------------------

    async def token(self, call: HttpCall) -> HttpAnswer:
        async def step(subject: Any, body: dict[str, Any]) -> Any:
            channel = self._channel_named(body)
            access = await self._identity.token(self._bearer(call), channel)
            subject.principal_id = access.user_id
            subject.reason = f"token for {channel.value}"
            return {
                "access_token": access.token,
                "token_type": "Bearer",
                "channel": channel.value,
                "expires_in": access.lifetime_s,
                "expires_at": access.expires_at.isoformat(),
            }

        return await self._step(call, Action.TOKEN, step, frozenset({"channel"}))

    async def logout(self, call: HttpCall) -> HttpAnswer:
        async def step(subject: Any, body: dict[str, Any]) -> Any:
            subject.principal_id = await self._identity.logout(self._bearer(call), self._channel)
            subject.reason = "session ended"
            return {"logged_out": True}

        return await self._step(call, Action.LOGOUT, step)

    async def whoami(self, call: HttpCall) -> HttpAnswer:
        invocation = self._invocation(call, Action.READ)
        try:
            principal = (await self._pipeline.authenticate(invocation)).principal
        except NexusError as error:
            return problem(error, call.request_id, call.path)
        document = {
            "id": principal.id,
            "kind": principal.kind,
            "roles": sorted(principal.roles),
            "attributes": codec.as_plain(principal.attributes),
            "auth_time": None if principal.auth_time is None else principal.auth_time.isoformat(),
            "channel": self._channel.value,
        }
        return ok(document, call.request_id)

    # -- single sign-on ----------------------------------------------------------------------------

    def _return_to(self, given: str | None) -> str:
        """Only this server's own paths or loopback addresses (the CLI's listener): no open redirect.

        Browsers read a backslash as a slash and drop tabs and newlines, so any of those, any other
        control or non-ASCII character, userinfo, or a second slash or backslash after the first
        is refused rather than interpreted.
        """
        if not given:
            return ""
        if len(given) > _MAX_RETURN_TO or not given.isascii() or _UNSAFE_IN_URL.search(given):
            raise InvalidInputError(_RETURN_TO_RULE)
        if given.startswith("/"):
            if given[1:2] in ("/", "\\"):
                raise InvalidInputError(_RETURN_TO_RULE)
            return given
        parts = urlsplit(given)
        if (
            parts.scheme.lower() not in ("http", "https")
            or "@" in parts.netloc
            or parts.hostname not in self._return_hosts
        ):
            raise InvalidInputError(_RETURN_TO_RULE)
        return given

    def _sso_return(self, given: object, challenge: object) -> str:
        """Where a sign-on comes back to and the PKCE challenge its code is bound to, packed for
        the pending state ("" when it answers at the callback itself)."""
        if given is not None and not isinstance(given, str):
            raise InvalidInputError(_RETURN_TO_RULE)
        return_to = self._return_to(given)
        if not isinstance(challenge, str) or (challenge and not _CODE_CHALLENGE.fullmatch(challenge)):
            raise InvalidInputError(
                "code_challenge must be base64url(SHA-256(code_verifier)), 43 characters."
            )
        if return_to and not return_to.startswith("/") and not challenge:
            # The one-time code travels through the browser to a listener on this machine; only
            # the program that started the sign-on, holding the verifier, may exchange it.
            raise InvalidInputError("A loopback return_to needs a code_challenge (S256).")
        return json.dumps({"to": return_to, "cc": challenge}) if return_to else ""

    async def sso_begin(self, call: HttpCall) -> HttpAnswer:
        """The CLI's start of a sign-on, on its own route (its tenant by prefix): the identity
        provider address for the browser, which comes back to the CLI's loopback listener."""
        protocol = call.params["protocol"]

        async def step(subject: Any, body: dict[str, Any]) -> Any:
            return_to = body.get("return_to")
            if not isinstance(return_to, str) or return_to.startswith("/"):
                raise InvalidInputError("return_to must be the loopback address of the CLI's listener.")
            packed = self._sso_return(return_to, body.get("code_challenge", ""))
            subject.reason = f"single sign-on started ({protocol[:16]})"
            url = await self._identity.begin_sso(protocol, self._channel, packed, tenant_id=subject.tenant_id)
            return {"url": url}

        return await self._step(call, Action.LOGIN, step, frozenset({"return_to", "code_challenge"}))

    async def _admit_tenant(self, tenant_id: str) -> None:
        """The tenant a sign-on began in still takes logins: it exists and is not suspended."""
        gate = self._pipeline.tenancy
        tenant = None if gate is None else (await gate.directory.current()).index.by_id.get(tenant_id)
        if gate is None or tenant is None:
            raise LoginRefusedError(SSO_UNKNOWN, audit_reason="single sign-on begun in a tenant that is gone")
        gate.check_active(tenant)

    async def sso_start(self, call: HttpCall) -> HttpAnswer:
        query = dict(parse_qsl(call.query))
        invocation = self._invocation(call, Action.LOGIN)

        async def run(subject: Any) -> str:
            try:
                channel = Channel(query.get("channel", "api"))
            except ValueError:
                raise InvalidInputError("channel must be api, cli or mcp.") from None
            packed = self._sso_return(query.get("return_to"), query.get("code_challenge", ""))
            subject.reason = f"single sign-on started ({call.params['protocol'][:16]})"
            return await self._identity.begin_sso(
                call.params["protocol"], channel, packed, tenant_id=subject.tenant_id
            )

        try:
            url = await self._pipeline.account(invocation, run)
        except NexusError as error:
            return problem(error, call.request_id, call.path)
        return HttpAnswer(302, b"", "text/plain", (("location", url), ("cache-control", "no-store")))

    async def sso_callback(self, call: HttpCall) -> HttpAnswer:
        params = dict(parse_qsl(call.query))
        if call.method == "POST":
            raw = await call.body(1_048_576)
            params.update(parse_qsl(raw.decode("latin-1")))
        invocation = self._invocation(call, Action.LOGIN)
        protocol = call.params["protocol"]
        outcome: dict[str, Any] = {}

        async def run(subject: Any) -> str:
            try:
                grant, return_to = await self._identity.complete_sso(
                    protocol, params, call.client_addr, tenant_id=subject.tenant_id, admit=self._admit_tenant
                )
            except LoginRefusedError:
                raise  # the pipeline audits its real reason; the caller sees a plain refusal
            except NexusError as due:
                return_to = str(due.detail.get("return_to", ""))
                if not return_to or due.code not in ("mfa_required", "mfa_enrollment_required"):
                    raise
                outcome["problem"] = due.to_problem()
                subject.reason = f"single sign-on passed ({protocol[:16]}); second factor due"
                return return_to
            subject.principal_id = grant.session.user_id
            subject.tenant_id = grant.session.tenant_id  # the tenant it began in: audited there
            subject.reason = f"logged in by {protocol[:16]}"
            outcome["grant"] = self._grant_document(grant)
            return return_to

        try:
            packed = await self._pipeline.account(invocation, run)
        except NexusError as error:
            return private(problem(error, call.request_id, call.path))
        return_to, challenge = _unpack(packed)
        if not return_to:
            if "problem" in outcome:
                body = codec.dumps(outcome["problem"])
                return HttpAnswer(401, body, "application/problem+json", _PRIVATE)
            return private(ok(outcome["grant"], call.request_id))
        # The browser goes back with a one-time code; the tokens never travel in a URL.
        code = secrets.token_urlsafe(24)
        outcome["challenge"] = challenge
        await self._identity.keep_sso_outcome(code, codec.dumps(outcome).decode(), _SSO_CODE_TTL_S)
        joiner = "&" if urlsplit(return_to).query else "?"
        location = f"{return_to}{joiner}{urlencode({'code': code})}"
        return HttpAnswer(302, b"", "text/plain", (("location", location), ("cache-control", "no-store")))

    async def sso_exchange(self, call: HttpCall) -> HttpAnswer:
        invocation = self._invocation(call, Action.LOGIN)

        async def run(subject: Any) -> dict[str, Any]:
            body = codec.loads_object(await call.body(_BODY_LIMIT), what="The body")
            if set(body) - {"code", "code_verifier"}:
                raise InvalidInputError('The body must be {"code", "code_verifier"}.')
            kept = await self._identity.take_sso_outcome(str(body.get("code", "")))
            if kept is None:
                raise AuthenticationError("The sign-on code is unknown, used or expired; sign on again.")
            outcome = codec.loads_object(kept.encode(), what="The sign-on outcome")
            if not _verifier_matches(outcome.get("challenge") or "", body.get("code_verifier")):
                raise AuthenticationError("Only the program that started this sign-on may exchange its code.")
            if "problem" in outcome:
                return {"problem": outcome["problem"]}
            grant: dict[str, Any] = outcome["grant"]
            subject.principal_id = grant["user"]["id"]
            subject.reason = "single sign-on code exchanged"
            return grant

        try:
            document = await self._pipeline.account(invocation, run)
        except NexusError as error:
            return private(problem(error, call.request_id, call.path))
        if "problem" in document:
            due = document["problem"]
            due["request_id"] = call.request_id
            headers = (("x-request-id", call.request_id), *_PRIVATE)
            return HttpAnswer(401, codec.dumps(due), "application/problem+json", headers)
        return private(ok(document, call.request_id))

    async def sso_metadata(self, call: HttpCall) -> HttpAnswer:
        xml = self._identity.sso_metadata(call.params["protocol"])
        if xml is None:
            return problem(
                InvalidInputError("This sign-on protocol publishes no metadata."), call.request_id, call.path
            )
        return HttpAnswer(200, xml.encode(), "application/samlmetadata+xml")

    async def jwks(self, call: HttpCall) -> HttpAnswer:
        return ok(self._jwks(), call.request_id)


def private(answer: HttpAnswer) -> HttpAnswer:
    """`answer` marked as never to be stored by a cache."""
    return replace(answer, headers=(*answer.headers, *_PRIVATE))


def _unpack(packed: str) -> tuple[str, str]:
    """(return_to, code_challenge) as `sso_start` packed them into the sign-on state."""
    if not packed:
        return "", ""
    state = json.loads(packed)
    return str(state.get("to", "")), str(state.get("cc", ""))


def _verifier_matches(challenge: str, verifier: object) -> bool:
    """No challenge was set (an own-path return_to), or `verifier` is the one it was made from."""
    if not challenge:
        return True
    if not isinstance(verifier, str) or not 43 <= len(verifier) <= 128:
        return False
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(digest, challenge)
