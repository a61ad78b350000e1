"""The REST channel (and the server side of the CLI channel): parse, call the pipeline, render.

Hot routes are plain Starlette routes inside the FastAPI app, so a call costs no dependency
resolution; the OpenAPI document is built from the catalog instead. Never imports backends.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from nexus.channels import codec
from nexus.channels.openapi import build_openapi
from nexus.core.pipeline import Pipeline, new_request_id
from nexus.core.types import Channel, Credential, Invocation
from nexus.errors import InvalidInputError, NexusError, PayloadTooLargeError

JSON = "application/json"
PROBLEM = "application/problem+json"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")

CLI_PREFIX = "/cli/v1"


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """What the REST channel needs from the app besides the pipeline."""

    max_body_bytes: int
    docs_enabled: bool
    metrics_path: str
    render_metrics: Callable[[], tuple[bytes, str]] | None
    is_ready: Callable[[], Awaitable[bool]]
    auth_enabled: bool
    title: str
    version: str


def credential_from(headers: Any) -> Credential | None:
    """Bearer token or X-API-Key header; the same for the REST and CLI channels."""
    authorization: str | None = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return Credential(scheme="bearer", secret=token.strip())
        return Credential(scheme=scheme.lower(), secret=token.strip())
    api_key: str | None = headers.get("x-api-key")
    return Credential(scheme="api_key", secret=api_key) if api_key else None


def request_id_from(headers: Any) -> str:
    given: str | None = headers.get("x-request-id")
    return given if given and _REQUEST_ID.fullmatch(given) else new_request_id()


def problem_response(error: NexusError, request_id: str, instance: str) -> Response:
    body = error.to_problem(instance=instance)
    body["request_id"] = request_id
    headers = {"x-request-id": request_id}
    if error.http_status == 401:
        headers["www-authenticate"] = 'Bearer realm="nexus"'
    retry_after = body.get("retry_after")
    if isinstance(retry_after, int):
        headers["retry-after"] = str(retry_after)
    return Response(codec.dumps(body), status_code=error.http_status, media_type=PROBLEM, headers=headers)


def _ok(document: Any, request_id: str) -> Response:
    return Response(codec.dumps(document), media_type=JSON, headers={"x-request-id": request_id})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


class WorkflowRoutes:
    """The workflow routes of one channel (REST, or the CLI channel's endpoints)."""

    def __init__(self, pipeline: Pipeline, channel: Channel, options: HttpOptions) -> None:
        self._pipeline = pipeline
        self._channel = channel
        self._options = options

    def routes(self, prefix: str) -> list[Route]:
        return [
            Route(f"{prefix}/workflows", self.list_workflows, methods=["GET"]),
            Route(f"{prefix}/workflows/{{name}}", self.describe, methods=["GET"]),
            Route(f"{prefix}/workflows/{{name}}/execute", self.execute, methods=["POST"]),
        ]

    def _invocation(self, request: Request, workflow: str, inputs: dict[str, Any]) -> Invocation:
        client = request.client
        return Invocation(
            request_id=request_id_from(request.headers),
            channel=self._channel,
            workflow=workflow,
            inputs=inputs,
            credential=credential_from(request.headers),
            client_addr=client.host if client else "",
        )

    async def execute(self, request: Request) -> Response:
        invocation = self._invocation(request, request.path_params["name"], {})
        try:
            body = codec.loads_object(
                await _read_body(request, self._options.max_body_bytes), what="The body"
            )
            inputs = body.get("inputs", {})
            if not isinstance(inputs, dict) or set(body) - {"inputs"}:
                raise InvalidInputError('The body must be {"inputs": {...}}.')
            result = await self._pipeline.execute(replace(invocation, inputs=inputs))
        except NexusError as error:
            return problem_response(error, invocation.request_id, request.url.path)
        return _ok(codec.result_document(result), invocation.request_id)

    async def describe(self, request: Request) -> Response:
        invocation = self._invocation(request, request.path_params["name"], {})
        try:
            info = await self._pipeline.describe(invocation)
        except NexusError as error:
            return problem_response(error, invocation.request_id, request.url.path)
        return _ok(codec.info_document(info, with_schema=True), invocation.request_id)

    async def list_workflows(self, request: Request) -> Response:
        invocation = self._invocation(request, "*", {})
        try:
            infos = await self._pipeline.list_workflows(invocation)
        except NexusError as error:
            return problem_response(error, invocation.request_id, request.url.path)
        listing = [codec.info_document(info, with_schema=False) for info in infos]
        return _ok({"workflows": listing}, invocation.request_id)


def build_http_app(
    pipeline: Pipeline, options: HttpOptions, *, extra_routes: Iterable[BaseRoute] = ()
) -> FastAPI:
    """The ASGI app of the API port: REST, `extra_routes` (the CLI channel), health, metrics, docs."""
    app = FastAPI(
        title=options.title,
        version=options.version,
        docs_url="/docs" if options.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if options.docs_enabled else None,
    )
    for route in WorkflowRoutes(pipeline, Channel.API, options).routes(""):
        app.router.routes.append(route)
    app.router.routes.extend(extra_routes)
    _add_operational_routes(app, options)
    _add_error_handlers(app)
    if options.docs_enabled:

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is None:
                app.openapi_schema = build_openapi(
                    app, pipeline.catalog, list_workflows=not options.auth_enabled
                )
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override point
    return app


def _add_operational_routes(app: FastAPI, options: HttpOptions) -> None:
    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def ready(request: Request) -> Response:
        if await options.is_ready():
            return Response(b'{"status":"ready"}', media_type=JSON)
        return Response(b'{"status":"not ready"}', status_code=503, media_type=JSON)

    app.router.routes.append(Route("/health", health, methods=["GET"]))
    app.router.routes.append(Route("/ready", ready, methods=["GET"]))
    render = options.render_metrics
    if render is not None:

        async def metrics(request: Request) -> Response:
            body, content_type = render()
            return Response(body, media_type=content_type)

        app.router.routes.append(Route(options.metrics_path, metrics, methods=["GET"]))


def _add_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def on_nexus_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NexusError)  # noqa: S101  # registered for NexusError only
        return problem_response(exc, request_id_from(request.headers), request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # noqa: S101  # registered for HTTPException only
        status = exc.status_code
        body = {"type": "about:blank", "title": str(exc.detail), "status": status, "code": f"http_{status}"}
        return Response(codec.dumps(body), status_code=status, media_type=PROBLEM, headers=exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        error = InvalidInputError("The request is not valid.")
        return problem_response(error, request_id_from(request.headers), request.url.path)

    app.add_exception_handler(NexusError, on_nexus_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
