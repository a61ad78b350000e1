"""Channel clients that call a served app the way its users do and normalise the answer.

HTTP speaks REST, the CLI client runs the real `nexus` console script in a subprocess, MCP uses the
official SDK client over streamable HTTP. Each returns a `Reply` so one test body fits all three.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2

from nexus.core.types import Channel, Outcome

_BY_CODE = {
    "invalid_input": Outcome.INVALID_INPUT,
    "payload_too_large": Outcome.INVALID_INPUT,
    "workflow_not_found": Outcome.NOT_FOUND,
    "tenant_not_found": Outcome.NOT_FOUND,
    "tenant_suspended": Outcome.FORBIDDEN,
    "tenant_conflict": Outcome.INVALID_INPUT,
    "not_authenticated": Outcome.UNAUTHENTICATED,
    "mfa_required": Outcome.UNAUTHENTICATED,
    "mfa_enrollment_required": Outcome.UNAUTHENTICATED,
    "reauth_required": Outcome.UNAUTHENTICATED,
    "login_throttled": Outcome.RATE_LIMITED,
    "forbidden": Outcome.FORBIDDEN,
    "rate_limited": Outcome.RATE_LIMITED,
    "quota_exceeded": Outcome.RATE_LIMITED,
    "workflow_failed": Outcome.FAILED,
    "dependency_unavailable": Outcome.UNAVAILABLE,
    "timeout": Outcome.UNAVAILABLE,
}


@dataclass(frozen=True)
class Reply:
    """A channel's answer in channel-neutral terms; `raw` keeps the channel's own form."""

    channel: Channel
    outcome: Outcome
    code: str | None = None
    body: Any = None
    retry_after: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS


def _problem_reply(channel: Channel, problem: dict[str, Any], raw: dict[str, Any]) -> Reply:
    code = problem.get("code")
    outcome = _BY_CODE.get(str(code), Outcome.ERROR)
    retry = problem.get("retry_after")
    return Reply(channel, outcome, code, problem, retry if isinstance(retry, int) else None, raw)


class ChannelClient(Protocol):
    channel: Channel

    async def list_workflows(self) -> Reply: ...

    async def execute(self, workflow: str, inputs: dict[str, Any]) -> Reply: ...

    async def health(self) -> Reply:
        """The health detail (`GET /health/detail`, `nexus health`, `nexus://health`)."""
        ...


class HttpClient:
    """The REST channel."""

    channel = Channel.API

    def __init__(
        self,
        api_url: str,
        token: str | None = None,
        *,
        host: str | None = None,
        trace_parent: str | None = None,
    ) -> None:
        self._url = api_url
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        if host is not None:  # a tenant's subdomain, as a DNS name pointing here would send it
            self._headers["host"] = host
        if trace_parent is not None:  # the W3C header a traced caller sends
            self._headers["traceparent"] = trace_parent

    async def _send(self, method: str, path: str, body: Any = None) -> httpx2.Response:
        async with httpx2.AsyncClient(base_url=self._url, headers=self._headers, timeout=30) as client:
            return await client.request(method, path, json=body)

    def _reply(self, response: httpx2.Response) -> Reply:
        raw = {"status": response.status_code, "headers": dict(response.headers)}
        document = response.json()
        if response.status_code == 200:
            return Reply(self.channel, Outcome.SUCCESS, None, document, None, raw)
        return _problem_reply(self.channel, document, raw)

    async def list_workflows(self) -> Reply:
        return self._reply(await self._send("GET", "/workflows"))

    async def execute(self, workflow: str, inputs: dict[str, Any]) -> Reply:
        return self._reply(await self._send("POST", f"/workflows/{workflow}/execute", {"inputs": inputs}))

    async def health(self) -> Reply:
        return self._reply(await self._send("GET", "/health/detail"))


class CliClient:
    """The CLI channel, through the real console script in a subprocess."""

    channel = Channel.CLI

    def __init__(
        self,
        api_url: str,
        token: str | None = None,
        *,
        tenant: str | None = None,
        trace_parent: str | None = None,
    ) -> None:
        self._env = {**os.environ, "NEXUS_URL": api_url}
        for inherited in ("NEXUS_TOKEN", "NEXUS_TENANT", "TRACEPARENT"):
            self._env.pop(inherited, None)
        if token:
            self._env["NEXUS_TOKEN"] = token
        if tenant is not None:  # as `nexus --tenant <prefix>`
            self._env["NEXUS_TENANT"] = tenant
        if trace_parent is not None:  # a traced script's `nexus` carries it on
            self._env["TRACEPARENT"] = trace_parent

    async def run(self, *args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nexus",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        return process.returncode or 0, out.decode(), err.decode()

    def _reply(self, code: int, out: str, err: str) -> Reply:
        raw: dict[str, Any] = {"exit_code": code, "stdout": out, "stderr": err}
        if code == 0:
            return Reply(self.channel, Outcome.SUCCESS, None, json.loads(out), None, raw)
        return _problem_reply(self.channel, json.loads(err), raw)

    async def list_workflows(self) -> Reply:
        return self._reply(*await self.run("workflows", "list", "--json"))

    async def execute(self, workflow: str, inputs: dict[str, Any]) -> Reply:
        params: list[str] = []
        for name, value in inputs.items():
            # Strings as typed; anything else as its JSON value (`-p name:=<json>`).
            params += ["-p", f"{name}={value}" if isinstance(value, str) else f"{name}:={json.dumps(value)}"]
        return self._reply(*await self.run("run", workflow, *params, "--json"))

    async def health(self) -> Reply:
        return self._reply(*await self.run("health", "--json"))


class McpClient:
    """The MCP channel, through the official SDK client over streamable HTTP."""

    channel = Channel.MCP

    def __init__(self, mcp_url: str, token: str | None = None, *, trace_parent: str | None = None) -> None:
        self._refusal: httpx2.Response | None = None
        self._url = mcp_url
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        if trace_parent is not None:  # on each of the transport's HTTP requests
            self._headers["traceparent"] = trace_parent

    async def _session(self, action: Callable[[Any], Awaitable[Reply]]) -> Reply:
        from mcp.client.client import Client
        from mcp.client.streamable_http import streamable_http_client

        async def remember(response: httpx2.Response) -> None:
            if response.status_code == 401:
                await response.aread()
                self._refusal = response

        self._refusal = None
        async with (
            httpx2.AsyncClient(
                headers=self._headers, timeout=30, event_hooks={"response": [remember]}
            ) as http,
            Client(streamable_http_client(self._url, http_client=http)) as client,
        ):
            return await action(client)

    async def _guarded(self, action: Callable[[Any], Awaitable[Reply]]) -> Reply:
        try:
            return await self._session(action)
        except Exception as exc:  # unwrapped below; anything unrecognised is re-raised
            leaf = _leaf(exc)
            reply = self._failure(leaf)
            if reply is None:
                raise
            return reply

    def _failure(self, exc: BaseException) -> Reply | None:
        from mcp.shared.exceptions import MCPError

        if self._refusal is not None:
            return self._http_error(self._refusal)
        if isinstance(exc, MCPError):
            raw = {"jsonrpc_error": exc.error.code, "message": exc.error.message}
            data = exc.error.data
            if isinstance(data, dict) and "code" in data:
                return _problem_reply(self.channel, data, raw)
            outcome = Outcome.NOT_FOUND if exc.error.code == -32602 else Outcome.ERROR
            code = "workflow_not_found" if outcome is Outcome.NOT_FOUND else None
            return Reply(self.channel, outcome, code, {"message": exc.error.message}, None, raw)
        if isinstance(exc, httpx2.HTTPStatusError):
            return self._http_error(exc.response)
        return None

    def _http_error(self, response: httpx2.Response) -> Reply:
        raw = {"status": response.status_code, "headers": dict(response.headers)}
        if response.status_code == 401:
            raw["www_authenticate"] = response.headers.get("www-authenticate", "")
            try:
                problem = response.json()
            except (ValueError, httpx2.ResponseNotRead):
                problem = None
            if isinstance(problem, dict) and "code" in problem:
                return _problem_reply(self.channel, problem, raw)
            return Reply(self.channel, Outcome.UNAUTHENTICATED, "not_authenticated", None, None, raw)
        return Reply(self.channel, Outcome.ERROR, None, None, None, raw)

    async def list_workflows(self) -> Reply:
        async def action(client: Any) -> Reply:
            listing = await client.list_tools()
            tools = [{"name": t.name, "input_schema": t.input_schema} for t in listing.tools]
            return Reply(self.channel, Outcome.SUCCESS, None, {"workflows": tools})

        return await self._guarded(action)

    async def execute(self, workflow: str, inputs: dict[str, Any]) -> Reply:
        async def action(client: Any) -> Reply:
            result = await client.call_tool(workflow, inputs)
            document = result.structured_content
            if result.is_error:
                return _problem_reply(self.channel, document or {}, {"is_error": True})
            return Reply(self.channel, Outcome.SUCCESS, None, document, None, {"is_error": False})

        return await self._guarded(action)

    async def health(self) -> Reply:
        async def action(client: Any) -> Reply:
            result = await client.read_resource("nexus://health")
            [content] = result.contents
            return Reply(self.channel, Outcome.SUCCESS, None, json.loads(content.text))

        return await self._guarded(action)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


@dataclass(frozen=True, slots=True)
class TenantAddress:
    """How each channel's client reaches one tenant: the REST Host (its subdomain under the base
    domain), the CLI prefix, and the tenant's MCP URL (`/t/{tenant}/mcp`, or its own port)."""

    host: str | None = None
    prefix: str | None = None
    mcp_url: str | None = None


def client_for(
    channel: Channel,
    api_url: str,
    mcp_url: str,
    token: str | None = None,
    *,
    tenant: TenantAddress | None = None,
    trace_parent: str | None = None,
) -> ChannelClient:
    """The client of `channel` for an app served at `api_url` / `mcp_url` (through `tenant`'s
    route on each channel when given; in the W3C trace `trace_parent` names when given: the
    `traceparent` header on REST and MCP, TRACEPARENT for the `nexus` command)."""
    route = tenant or TenantAddress()
    if channel is Channel.API:
        return HttpClient(api_url, token, host=route.host, trace_parent=trace_parent)
    if channel is Channel.CLI:
        return CliClient(api_url, token, tenant=route.prefix, trace_parent=trace_parent)
    return McpClient(route.mcp_url or mcp_url, token, trace_parent=trace_parent)
