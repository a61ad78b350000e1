"""The `nexus` command's HTTP client for the CLI channel's routes (`/cli/v1` on the API port).

Every failure becomes a `Failure` carrying the exit code of its error class; transport errors name the
URL. Imports httpx2 and the CLI's own light modules only, never the server stack.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx2

from nexus.channels.cli.problem import Failure, exit_code_for, failure_from_problem, unreachable
from nexus.errors import InternalError, InvalidInputError

# Must equal nexus.channels.http.CLI_PREFIX (a test pins it); importing that module would load FastAPI.
PREFIX = "/cli/v1"
USER_AGENT = "nexus-cli"


class CliClient:
    """Calls one Nexus server; use as a context manager so the connection pool is closed."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        if not self.url.lower().startswith(("http://", "https://")):
            raise Failure(
                "Invalid server URL", f"{url!r}: expected http://host:port.", InvalidInputError.exit_code
            )
        self._timeout_s = timeout_s
        headers = {"user-agent": USER_AGENT, "accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
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

    def run(self, workflow: str, params: dict[str, str]) -> dict[str, Any]:
        """Execute `workflow`; the server coerces each raw string by the workflow's input schema."""
        return self._call("POST", f"/workflows/{quote(workflow, safe='')}/run", json={"params": params})

    def _call(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=json)
        except httpx2.TimeoutException:
            raise unreachable(self.url, f"no answer within {self._timeout_s:g} s.") from None
        except httpx2.ConnectError as exc:
            raise unreachable(self.url, _reason(exc, "connection refused")) from None
        except httpx2.HTTPError as exc:
            raise unreachable(self.url, _reason(exc, type(exc).__name__)) from None
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


def _json_object(response: httpx2.Response) -> dict[str, Any] | None:
    try:
        value = response.json()
    except ValueError:  # not JSON, or not decodable text
        return None
    return value if isinstance(value, dict) else None


def _reason(exc: Exception, fallback: str) -> str:
    text = str(exc).strip()
    return f"{text}." if text and not text.endswith(".") else text or f"{fallback}."
