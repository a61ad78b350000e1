"""The hot routes as plain ASGI: one request object, one answer object, a tiny path matcher.

Workflow calls are the traffic that matters, so they skip the web framework's middleware stack
and request objects; everything else (docs, metrics, health) falls through to the FastAPI app.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nexus.channels import codec
from nexus.core.pipeline import new_request_id
from nexus.core.types import Channel, Credential, RouteKind, TenantRoute
from nexus.errors import InternalError, NexusError, PayloadTooLargeError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = "application/json"
PROBLEM = "application/problem+json"
_log = logging.getLogger("nexus.channels")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def credential_from(headers: Mapping[str, str]) -> Credential | None:
    """Bearer token or X-API-Key header; the same for every HTTP-borne channel."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return Credential(scheme="bearer", secret=token.strip())
        return Credential(scheme=scheme.lower(), secret=token.strip())
    api_key = headers.get("x-api-key")
    return Credential(scheme="api_key", secret=api_key) if api_key else None


def request_id_from(headers: Mapping[str, str]) -> str:
    """The caller's X-Request-ID when it is sane, else a new one."""
    given = headers.get("x-request-id")
    return given if given and _REQUEST_ID.fullmatch(given) else new_request_id()


TENANT_HEADER = "x-nexus-tenant"
"""The CLI's tenant prefix (`nexus --tenant client001` sends it)."""
TRACEPARENT_HEADER = "traceparent"
# A W3C traceparent is 55 characters today; later versions may append fields. Longer is junk.
MAX_TRACE_PARENT = 256


def trace_parent_from(headers: Mapping[str, str]) -> str | None:
    """The caller's W3C `traceparent`, raw (the tracing backend parses it), bounded in length."""
    value = headers.get(TRACEPARENT_HEADER)
    return value[:MAX_TRACE_PARENT] if value else None


@dataclass(frozen=True, slots=True)
class HttpCall:
    """One HTTP request as a channel handler sees it; `params` are the matched path segments."""

    method: str
    path: str
    headers: Mapping[str, str]
    client_addr: str
    params: Mapping[str, str]
    receive: Receive
    request_id: str
    query: str = ""

    @property
    def credential(self) -> Credential | None:
        return credential_from(self.headers)

    @property
    def trace_parent(self) -> str | None:
        return trace_parent_from(self.headers)

    def route(self, channel: Channel) -> TenantRoute | None:
        """How the call names its tenant, as sent: the CLI by its `X-Nexus-Tenant` prefix
        (`nexus --tenant`), every other call on this port by its Host. Core decides what it means."""
        if channel is Channel.CLI:
            prefix = self.headers.get(TENANT_HEADER)
            return TenantRoute(RouteKind.PREFIX, prefix) if prefix is not None else None
        host = self.headers.get("host", "")
        return TenantRoute(RouteKind.HOST, host, self.headers.get("x-forwarded-host"))

    async def body(self, limit: int) -> bytes:
        """The whole body, refused with 413 past `limit` bytes (declared or streamed)."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
        return await read_body(self.receive, limit)


async def read_body(receive: Receive, limit: int) -> bytes:
    """Every `http.request` chunk of a request, refused with 413 as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A complete response: status, body and headers."""

    status: int
    body: bytes
    media_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", self.media_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            *((name.encode(), value.encode()) for name, value in self.headers),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def ok(document: Any, request_id: str) -> HttpAnswer:
    return HttpAnswer(200, codec.dumps(document), JSON, (("x-request-id", request_id),))


def problem(error: NexusError, request_id: str, instance: str) -> HttpAnswer:
    """An RFC 9457 answer for `error`, with the headers its status calls for."""
    body = error.to_problem(instance=instance)
    body["request_id"] = request_id
    headers = [("x-request-id", request_id)]
    if error.http_status == 401:
        headers.append(("www-authenticate", 'Bearer realm="nexus"'))
    retry_after = body.get("retry_after")
    if isinstance(retry_after, int):
        headers.append(("retry-after", str(retry_after)))
    return HttpAnswer(error.http_status, codec.dumps(body), PROBLEM, tuple(headers))


Handler = Callable[[HttpCall], Awaitable[HttpAnswer]]


@dataclass(frozen=True, slots=True)
class HotRoute:
    """`pattern` like "/workflows/{name}/execute"; a `{param}` segment matches one path segment."""

    method: str
    pattern: str
    handler: Handler
    parts: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.pattern.split("/")))

    def match(self, method: str, segments: Sequence[str]) -> dict[str, str] | None:
        parts = self.parts
        if method != self.method or len(parts) != len(segments):
            return None
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{"):
                if not segment:
                    return None
                params[part[1:-1]] = segment
            elif part != segment:
                return None
        return params


class HotRouter:
    """ASGI app: the hot routes, and `fallback` for every other request."""

    def __init__(self, routes: Sequence[HotRoute], fallback: AsgiApp | None = None) -> None:
        self._routes = tuple(routes)
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            segments = path.split("/")
            for route in self._routes:
                params = route.match(scope["method"], segments)
                if params is not None:
                    call = _call_of(scope, receive, params)
                    await (await _answer(route.handler, call)).send(send)
                    return
        if self._fallback is not None:
            await self._fallback(scope, receive, send)
        elif scope["type"] == "http":
            await HttpAnswer(404, b'{"title":"Not Found","status":404,"code":"http_404"}', PROBLEM).send(send)


async def _answer(handler: Handler, call: HttpCall) -> HttpAnswer:
    """The handler's answer; a bug in a channel still answers problem+json with only a request id."""
    try:
        return await handler(call)
    except Exception:  # noqa: BLE001  # logged whole here; the caller gets only the request id
        request_id = call.request_id
        _log.exception("unexpected error in %s %s", call.method, call.path, extra={"request_id": request_id})
        return problem(InternalError(f"Unexpected error; request id {request_id}."), request_id, call.path)


def _call_of(scope: Scope, receive: Receive, params: dict[str, str]) -> HttpCall:
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    client = scope.get("client")
    address = client[0] if client else ""
    query = scope.get("query_string", b"").decode("latin-1")
    return HttpCall(
        scope["method"], scope["path"], headers, address, params, receive, request_id_from(headers), query
    )
