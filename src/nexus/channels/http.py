"""The REST channel: parse, call the pipeline, render.

Workflow routes and the app's own surfaces (health detail, explain) are hot ASGI routes (see
`asgi.py`) in front of a FastAPI app that serves the public health check, readiness, metrics and the
docs; the OpenAPI document is built from the catalog. Never imports backends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nexus.channels import codec
from nexus.channels.asgi import (
    JSON,
    PROBLEM,
    AsgiApp,
    Handler,
    HotRoute,
    HotRouter,
    HttpAnswer,
    HttpCall,
    ok,
    problem,
    request_id_from,
)
from nexus.channels.openapi import build_openapi
from nexus.core.cluster import ClusterView
from nexus.core.pipeline import Pipeline
from nexus.core.policy.explain import Explainer, ExplainQuery
from nexus.core.policy.permission import AUTHZ_SURFACE, HEALTH_SURFACE
from nexus.core.policy.permission import METRICS_SURFACE as METRICS
from nexus.core.types import Action, Channel, Invocation
from nexus.errors import ConfigurationError, InvalidInputError, NexusError

CLI_PREFIX = "/cli/v1"
METRICS_SURFACE = "_metrics"  # the audit's name for the metrics endpoint
HEALTH_AUDIT = "_health"  # the audit's name for the health detail, on every channel
AUTHZ_AUDIT = "_authz"  # the audit's name for explain, on every channel
EXPLAIN = "explain"  # the action of explain: `<channel>:explain:authz` allows it

ClusterViewSource = Callable[[], Awaitable[ClusterView]]


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
    cluster: ClusterViewSource | None = None
    """With clustering: this node's id and the live nodes, for the health detail."""


def problem_response(error: NexusError, request_id: str, instance: str) -> Response:
    """`problem` as a Starlette response, for code that answers through Starlette."""
    answer = problem(error, request_id, instance)
    return Response(answer.body, answer.status, dict(answer.headers), answer.media_type)


class WorkflowRoutes:
    """The workflow routes of one channel: list, describe, execute."""

    def __init__(self, pipeline: Pipeline, channel: Channel, options: HttpOptions) -> None:
        self._pipeline = pipeline
        self._channel = channel
        self._options = options

    def routes(self, prefix: str) -> list[HotRoute]:
        return [
            HotRoute("GET", f"{prefix}/workflows", self.list_workflows),
            HotRoute("GET", f"{prefix}/workflows/{{name}}", self.describe),
            HotRoute("POST", f"{prefix}/workflows/{{name}}/execute", self.execute),
        ]

    def invocation(self, call: HttpCall, workflow: str, inputs: Mapping[str, Any]) -> Invocation:
        return Invocation(
            request_id=call.request_id,
            channel=self._channel,
            workflow=workflow,
            inputs=inputs,
            credential=call.credential,
            client_addr=call.client_addr,
            route=call.route(self._channel),
            trace_parent=call.trace_parent,
        )

    async def execute(self, call: HttpCall) -> HttpAnswer:
        request_id = call.request_id
        try:
            body = codec.loads_object(await call.body(self._options.max_body_bytes), what="The body")
        except NexusError as error:
            # Unreadable bodies are still calls: they go through the pipeline, which audits them.
            return await self._refuse(call, request_id, error)
        inputs = body.get("inputs", {})
        if not isinstance(inputs, dict) or len(body) > 1 or (body and "inputs" not in body):
            shape = InvalidInputError('The body must be {"inputs": {...}}.')
            return await self._refuse(call, request_id, shape)
        invocation = self.invocation(call, call.params["name"], inputs)
        try:
            result = await self._pipeline.execute(invocation)
        except NexusError as error:
            return problem(error, request_id, call.path)
        return ok(codec.result_document(result), request_id)

    async def _refuse(self, call: HttpCall, request_id: str, error: NexusError) -> HttpAnswer:
        invocation = self.invocation(call, call.params["name"], {})
        return problem(await self._pipeline.refuse(invocation, error), request_id, call.path)

    async def describe(self, call: HttpCall) -> HttpAnswer:
        invocation = self.invocation(call, call.params["name"], {})
        try:
            info = await self._pipeline.describe(invocation)
        except NexusError as error:
            return problem(error, invocation.request_id, call.path)
        return ok(codec.info_document(info, with_schema=True), invocation.request_id)

    async def list_workflows(self, call: HttpCall) -> HttpAnswer:
        invocation = self.invocation(call, "*", {})
        try:
            infos = await self._pipeline.list_workflows(invocation)
        except NexusError as error:
            return problem(error, invocation.request_id, call.path)
        listing = [codec.info_document(info, with_schema=False) for info in infos]
        return ok({"workflows": listing}, invocation.request_id)


HealthCheck = Callable[[Invocation], Awaitable[dict[str, Any]]]


def health_check(
    pipeline: Pipeline,
    is_ready: Callable[[], Awaitable[bool]],
    version: str,
    cluster: ClusterViewSource | None = None,
) -> HealthCheck:
    """The health detail as a pipeline operation: status, version, readiness, how many workflows
    the call's route is served (a tenant's route: that tenant's, never the others') and, with
    clustering and on the platform's route, this node's id and the live nodes. Every channel
    answers with this one document."""

    async def check(invocation: Invocation) -> dict[str, Any]:
        ready = await is_ready()
        document: dict[str, Any] = {
            "status": "ok" if ready else "degraded",
            "version": version,
            "workflows": len(pipeline.served(invocation)),
            "ready": ready,
        }
        if cluster is not None and invocation.tenant_id is None:
            # The nodes' internal addresses are the platform's: a tenant's route never shows them
            # (as metrics and explain, which span every tenant, are the platform's route only).
            document["cluster"] = _cluster_document(await cluster())
        return document

    return check


def _cluster_document(view: ClusterView) -> dict[str, Any]:
    """`nodes` is None when the registry could not be read (not: no node is live)."""
    nodes = None
    if view.nodes is not None:
        nodes = [
            {
                "id": node.node_id,
                "api": node.api,
                "mcp": node.mcp,
                "version": node.version,
                "started_at": node.started_at.isoformat(),
                "last_seen": node.last_seen.isoformat() if node.last_seen is not None else None,
                "ready": node.ready,
            }
            for node in view.nodes
        ]
    return {"node_id": view.node_id, "nodes": nodes}


class SurfaceRoutes:
    """The app's own surfaces on one HTTP-borne channel: health detail and, with an explainer, explain.

    Each call is identified, authorized on its surface (`<channel>:read:health`,
    `<channel>:explain:authz`), rate limited and audited like a workflow call.
    """

    def __init__(
        self, pipeline: Pipeline, channel: Channel, options: HttpOptions, explainer: Explainer | None = None
    ) -> None:
        self._pipeline = pipeline
        self._channel = channel
        self._max_body_bytes = options.max_body_bytes
        self._explainer = explainer
        self._check = health_check(pipeline, options.is_ready, options.version, options.cluster)

    def routes(self, *, health: str, explain: str) -> list[HotRoute]:
        """The routes at these paths; explain only when there is an explainer to answer it."""
        routes = [HotRoute("GET", health, self.health)]
        if self._explainer is not None:
            routes.append(HotRoute("POST", explain, self.explain))
        return routes

    def _invocation(self, call: HttpCall, workflow: str, action: Action | str, surface: str) -> Invocation:
        return Invocation(
            call.request_id,
            self._channel,
            workflow,
            {},
            call.credential,
            call.client_addr,
            action=action,
            surface=surface,
            route=call.route(self._channel),
            trace_parent=call.trace_parent,
        )

    async def health(self, call: HttpCall) -> HttpAnswer:
        invocation = self._invocation(call, HEALTH_AUDIT, Action.READ, HEALTH_SURFACE)
        try:
            document = await self._pipeline.inspect(invocation, self._check)
        except NexusError as error:
            return problem(error, call.request_id, call.path)
        return ok(document, call.request_id)

    async def explain(self, call: HttpCall) -> HttpAnswer:
        explainer = self._explainer
        assert explainer is not None  # noqa: S101  # routes() serves explain only with an explainer
        invocation = self._invocation(call, AUTHZ_AUDIT, EXPLAIN, AUTHZ_SURFACE)
        try:
            body = codec.loads_object(await call.body(self._max_body_bytes), what="The body")
            query = ExplainQuery.from_document(body)
        except NexusError as error:
            # Unreadable queries are still calls: admitted, refused and audited by the pipeline.
            return problem(await self._pipeline.refuse(invocation, error), call.request_id, call.path)

        async def answer(_: Invocation) -> dict[str, Any]:
            return await explainer.explain(query)

        try:
            document = await self._pipeline.inspect(invocation, answer, noted=query.summary)
        except NexusError as error:
            return problem(error, call.request_id, call.path)
        return ok(document, call.request_id)


def build_http_app(
    pipeline: Pipeline,
    options: HttpOptions,
    *,
    extra_routes: Iterable[HotRoute] = (),
    explainer: Explainer | None = None,
) -> AsgiApp:
    """The ASGI app of the API port: REST, its surfaces and `extra_routes` (the CLI channel) as hot
    routes, and behind them a FastAPI app for the public health check, readiness, metrics and docs."""
    surfaces = SurfaceRoutes(pipeline, Channel.API, options, explainer)
    hot = [
        *WorkflowRoutes(pipeline, Channel.API, options).routes(""),
        *surfaces.routes(health="/health/detail", explain="/authz/explain"),
        *extra_routes,
    ]
    if options.render_metrics is not None and options.auth_enabled:
        # Metrics name every workflow and its traffic: with auth on, scrapers present a key too.
        hot.append(HotRoute("GET", options.metrics_path, _guarded_metrics(pipeline, options.render_metrics)))
    return HotRouter(hot, fallback=_framework_app(pipeline, options))


def build_metrics_app(pipeline: Pipeline, options: HttpOptions) -> AsgiApp:
    """The ASGI app of a metrics port of its own: GET `metrics_path` and nothing else (404), with
    the API port's handler, so scrapes are authorized, and refusals audited, the same way."""
    render = options.render_metrics
    if render is None:
        raise ConfigurationError("A metrics port needs metrics: pass enable_monitoring=True.")
    handler = _guarded_metrics(pipeline, render) if options.auth_enabled else _open_metrics(render)
    return HotRouter([HotRoute("GET", options.metrics_path, handler)])


def _open_metrics(render: Callable[[], tuple[bytes, str]]) -> Handler:
    async def metrics(call: HttpCall) -> HttpAnswer:
        body, content_type = render()
        return HttpAnswer(200, body, content_type)

    return metrics


def _guarded_metrics(pipeline: Pipeline, render: Callable[[], tuple[bytes, str]]) -> Handler:
    async def metrics(call: HttpCall) -> HttpAnswer:
        request_id = call.request_id
        invocation = Invocation(
            request_id,
            Channel.API,
            METRICS_SURFACE,
            {},
            call.credential,
            call.client_addr,
            action=Action.READ,
            surface=METRICS,
            route=call.route(Channel.API),
            trace_parent=call.trace_parent,
        )

        try:
            # Series name every workflow called: with roles configured, scraping needs api:read:metrics.
            await pipeline.admit(invocation)
        except NexusError as error:
            return problem(error, request_id, call.path)
        body, content_type = render()
        return HttpAnswer(200, body, content_type)

    return metrics


def _framework_app(pipeline: Pipeline, options: HttpOptions) -> FastAPI:
    app = FastAPI(
        title=options.title,
        version=options.version,
        docs_url="/docs" if options.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if options.docs_enabled else None,
    )
    _add_operational_routes(app, options)
    _add_error_handlers(app)
    if options.docs_enabled:
        built_at = [-1]

        def openapi() -> dict[str, Any]:
            # Rebuilt when a workflow was registered since: registration may happen while serving.
            if app.openapi_schema is None or built_at[0] != pipeline.catalog.version:
                built_at[0] = pipeline.catalog.version
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
    if render is not None and not options.auth_enabled:

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
