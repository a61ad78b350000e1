"""The `nexus` command's HTTP client for the CLI channel's routes (`/cli/v1` on the API port).

Every failure becomes a `Failure` carrying the exit code of its error class; transport errors name the
URL. Calls carry a fixed token, or one from a `TokenSource` that is asked once for a new token when
the server refuses the current one. Imports httpx2 and the CLI's own light modules only.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote

import httpx2

from nexus.channels.cli.problem import Failure, exit_code_for, failure_from_problem, unreachable
from nexus.errors import AuthenticationError, InternalError, InvalidInputError

# Must equal nexus.channels.http.CLI_PREFIX (a test pins it); importing that module would load FastAPI.
PREFIX = "/cli/v1"
USER_AGENT = "nexus-cli"
# Must equal nexus.channels.asgi.TENANT_HEADER (a test pins it): the route a call names its tenant by.
TENANT_HEADER = "x-nexus-tenant"
# A script's W3C trace context (the OpenTelemetry convention for processes): the CLI's calls join it.
TRACEPARENT_ENV = "TRACEPARENT"


class TokenSource(Protocol):
    """Where a client's bearer token comes from when none is fixed (the cached login)."""

    def token(self, client: CliClient) -> str | None:
        """The token for the next call (None: call without one)."""
        ...

    def renew(self, client: CliClient, refusal: Failure) -> str:
        """A new token after the server refused the last one (`refusal`); raises `Failure` if none."""
        ...


class CliClient:
    """Calls one Nexus server; use as a context manager so the connection pool is closed."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        source: TokenSource | None = None,
        timeout_s: float = 60.0,
        transport: httpx2.BaseTransport | None = None,
        tenant: str | None = None,
    ) -> None:
        """`tenant`: the CLI prefix every call names (`nexus --tenant`); None for the platform's route."""
        self.url = url.rstrip("/")
        self.tenant = tenant
        if not self.url.lower().startswith(("http://", "https://")):
            raise Failure(
                "Invalid server URL", f"{url!r}: expected http://host:port.", InvalidInputError.exit_code
            )
        self._timeout_s = timeout_s
        self._token = token
        self._source = None if token else source
        self._asked = False
        headers = {"user-agent": USER_AGENT, "accept": "application/json"}
        if tenant is not None:
            headers[TENANT_HEADER] = tenant
        trace_parent = os.environ.get(TRACEPARENT_ENV, "").strip()
        if trace_parent:
            headers["traceparent"] = trace_parent
        try:
            self._http = httpx2.Client(
                base_url=self.url + PREFIX, headers=headers, timeout=timeout_s, transport=transport
            )
        except httpx2.InvalidURL as exc:
            raise Failure("Invalid server URL", f"{url!r}: {exc}", InvalidInputError.exit_code) from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._http.close()

    def list_workflows(self) -> list[dict[str, Any]]:
        listing = self._call("GET", "/workflows").get("workflows")
        if not isinstance(listing, list):
            raise self._malformed("a listing without 'workflows'")
        return [item for item in listing if isinstance(item, dict)]

    def describe(self, workflow: str) -> dict[str, Any]:
        return self._call("GET", f"/workflows/{quote(workflow, safe='')}")

    def health(self) -> dict[str, Any]:
        """The health detail (needs read on `health` when roles are configured)."""
        return self._call("GET", "/health")

    def explain(self, query: dict[str, Any]) -> dict[str, Any]:
        """An authorization decision explained (needs `cli:explain:authz` when roles are configured)."""
        return self._call("POST", "/authz/explain", query)

    # -- tenant administration (the `tenants` surface; platform principals on the platform's route) --

    def list_tenants(self) -> list[dict[str, Any]]:
        listing = self._call("GET", "/admin/tenants").get("tenants")
        if not isinstance(listing, list):
            raise self._malformed("a listing without 'tenants'")
        return [item for item in listing if isinstance(item, dict)]

    def show_tenant(self, tenant_id: str) -> dict[str, Any]:
        """The tenant with its usage (running workflows, CLI sessions) and quota limits."""
        return self._call("GET", _tenant_path(tenant_id))

    def create_tenant(self, tenant_id: str, name: str, config: dict[str, Any]) -> dict[str, Any]:
        body = {"tenant_id": tenant_id, "name": name, "config": config}
        return self._call("POST", "/admin/tenants", body)

    def suspend_tenant(self, tenant_id: str) -> dict[str, Any]:
        return self._call("POST", f"{_tenant_path(tenant_id)}/suspend")

    def resume_tenant(self, tenant_id: str) -> dict[str, Any]:
        return self._call("POST", f"{_tenant_path(tenant_id)}/resume")

    def delete_tenant(self, tenant_id: str) -> dict[str, Any]:
        return self._call("DELETE", _tenant_path(tenant_id))

    def share_workflow(self, tenant_id: str, workflow: str, *, share: bool = True) -> dict[str, Any]:
        """Share `workflow` with the tenant (or take the share back), as a platform administrator."""
        return self._call(
            "POST" if share else "DELETE", f"{_tenant_path(tenant_id)}/workflows/{_segment(workflow)}"
        )

    def share_own_workflow(self, workflow: str, tenant_id: str) -> dict[str, Any]:
        """Share one of this client's tenant's workflows with tenant `tenant_id` (named by id)."""
        path = f"/tenant/workflows/{_segment(workflow)}/share"
        return self._call("POST", path, {"tenant_id": tenant_id})

    def run(self, workflow: str, params: dict[str, str]) -> dict[str, Any]:
        """Execute `workflow`; the server coerces each raw string by the workflow's input schema."""
        return self._call("POST", f"/workflows/{quote(workflow, safe='')}/run", json={"params": params})

    # -- the login conversation (bearer: the session token where the route wants one) -------------

    def login(self, username: str, password: str) -> dict[str, Any]:
        """A grant, or a `Failure` whose problem says `mfa_required` / `mfa_enrollment_required`."""
        return self._call("POST", "/auth/login", {"username": username, "password": password}, bearer="")

    def answer_mfa(self, challenge_id: str, method: str, code: str) -> dict[str, Any]:
        body = {"challenge_id": challenge_id, "method": method, "code": code}
        return self._call("POST", "/auth/mfa", body, bearer="")

    def send_sms_code(self, challenge_id: str) -> str:
        """Have the server text a code for the challenge; the masked number it went to."""
        return str(
            self._call("POST", "/auth/mfa/sms", {"challenge_id": challenge_id}, bearer="").get("sent_to")
        )

    def enroll(self, challenge_id: str, method: str, phone: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"challenge_id": challenge_id, "method": method}
        if phone:
            body["phone"] = phone
        return self._call("POST", "/auth/mfa/enroll", body, bearer="")

    def activate(self, challenge_id: str, code: str) -> dict[str, Any]:
        """The grant, with `recovery_codes`, once the first code of a new factor is right."""
        body = {"challenge_id": challenge_id, "code": code}
        return self._call("POST", "/auth/mfa/activate", body, bearer="")

    def exchange_sso_code(self, code: str, code_verifier: str) -> dict[str, Any]:
        """The grant for the one-time code of a sign-on this program started with the verifier's challenge."""
        body = {"code": code, "code_verifier": code_verifier}
        return self._call("POST", "/auth/sso/exchange", body, bearer="")

    def begin_sso(self, protocol: str, return_to: str, code_challenge: str) -> str:
        """Start a single sign-on on this client's route (with `tenant`, a login to that tenant);
        the identity provider's address, where the browser goes to come back to `return_to`.

        `code_challenge` is base64url(SHA-256(verifier)): only the holder of the verifier can then
        exchange the code the browser brings back.
        """
        body = {"return_to": return_to, "code_challenge": code_challenge}
        answer = self._call("POST", f"/auth/sso/{quote(protocol, safe='')}/start", body, bearer="")
        url = answer.get("url")
        if not isinstance(url, str) or not url.lower().startswith(("https://", "http://")):
            raise self._malformed("a sign-on start without the provider's address")
        return url

    def channel_token(self, session_token: str) -> dict[str, Any]:
        return self._call("POST", "/auth/token", {"channel": "cli"}, bearer=session_token)

    def reauthenticate(self, session_token: str, password: str) -> dict[str, Any]:
        return self._call("POST", "/auth/reauth", {"password": password}, bearer=session_token)

    def logout(self, session_token: str) -> None:
        self._call("POST", "/auth/logout", {}, bearer=session_token)

    def whoami(self) -> dict[str, Any]:
        return self._call("GET", "/auth/whoami")

    # -- transport -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, json: Any = None, *, bearer: str | None = None) -> dict[str, Any]:
        """Send one call; `bearer` overrides the client's token ("" sends none, and never renews)."""
        if bearer is not None:
            return self._answer(self._send(method, path, json, bearer))
        if self._source is not None and not self._asked:
            self._asked = True
            self._token = self._source.token(self)
        response = self._send(method, path, json, self._token)
        source = self._source
        if source is not None and response.status_code == 401:
            document = _json_object(response)
            if document is not None and document.get("code") == AuthenticationError.code:
                self._source = None  # once per command: a second refusal is the server's answer
                self._token = source.renew(self, failure_from_problem(document, 401))
                response = self._send(method, path, json, self._token)
        return self._answer(response)

    def _send(self, method: str, path: str, json: Any, token: str | None) -> httpx2.Response:
        headers = {"authorization": f"Bearer {token}"} if token else None
        try:
            return self._http.request(method, path, json=json, headers=headers)
        except httpx2.TimeoutException:
            raise unreachable(self.url, f"no answer within {self._timeout_s:g} s.") from None
        except httpx2.ConnectError as exc:
            raise unreachable(self.url, _reason(exc, "connection refused")) from None
        except httpx2.HTTPError as exc:
            raise unreachable(self.url, _reason(exc, type(exc).__name__)) from None

    def _answer(self, response: httpx2.Response) -> dict[str, Any]:
        document = _json_object(response)
        if response.is_success:
            if document is None:
                raise self._malformed(f"HTTP {response.status_code} without a JSON object")
            return document
        if document is None:
            status = response.status_code
            raise Failure(f"HTTP {status}", response.reason_phrase or None, exit_code_for(None, status))
        raise failure_from_problem(document, response.status_code)

    def _malformed(self, what: str) -> Failure:
        return Failure(
            f"Unexpected answer from {self.url}", f"{what}; is this a Nexus server?", InternalError.exit_code
        )


def _tenant_path(tenant_id: str) -> str:
    return f"/admin/tenants/{_segment(tenant_id)}"


def _segment(text: str) -> str:
    return quote(text, safe="")


def _json_object(response: httpx2.Response) -> dict[str, Any] | None:
    try:
        value = response.json()
    except ValueError:  # not JSON, or not decodable text
        return None
    return value if isinstance(value, dict) else None


def _reason(exc: Exception, fallback: str) -> str:
    text = str(exc).strip()
    return f"{text}." if text and not text.endswith(".") else text or f"{fallback}."
