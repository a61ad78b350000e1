"""The server side of the CLI channel: hot routes under `/cli/v1` that the `nexus` command calls.

Listing, describing, health detail and explain are the REST handlers bound to `Channel.CLI`; running
takes raw `key=value` strings and coerces them by the input schema before the pipeline. Never
imports backends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from nexus.channels import codec
from nexus.channels.asgi import HotRoute, HttpAnswer, HttpCall, ok, problem
from nexus.channels.cli.coerce import coerce_params
from nexus.channels.http import CLI_PREFIX, HttpOptions, SurfaceRoutes, WorkflowRoutes
from nexus.core.pipeline import Pipeline
from nexus.core.policy.explain import Explainer
from nexus.core.types import Channel, Invocation
from nexus.errors import InvalidInputError, NexusError

_BODY_SHAPE = 'The body must be {"params": {"name": "value", ...}}.'


class CliRun:
    """`POST /cli/v1/workflows/{name}/run`: coerce the raw parameters, execute, render as REST does."""

    def __init__(self, pipeline: Pipeline, options: HttpOptions) -> None:
        self._pipeline = pipeline
        self._max_body_bytes = options.max_body_bytes

    async def run(self, call: HttpCall) -> HttpAnswer:
        request_id = call.request_id
        name = call.params["name"]
        invocation = Invocation(
            request_id=request_id,
            channel=Channel.CLI,
            workflow=name,
            inputs={},
            credential=call.credential,
            client_addr=call.client_addr,
            route=call.route(Channel.CLI),
            trace_parent=call.trace_parent,
        )
        try:
            params = _params_of(codec.loads_object(await call.body(self._max_body_bytes), what="The body"))
        except NexusError as error:
            # Unreadable bodies are still calls: the pipeline admits and audits them, then refuses.
            return problem(await self._pipeline.refuse(invocation, error), request_id, call.path)
        try:
            coerced = replace(invocation, inputs=coerce_params(params, self._schema_of(name)))
            result = await self._pipeline.execute(coerced)
        except NexusError as error:
            return problem(error, request_id, call.path)
        return ok(codec.result_document(result), request_id)

    def _schema_of(self, name: str) -> Mapping[str, Any]:
        # Only steers coercion; the response never depends on it, so it cannot reveal a hidden workflow.
        catalog = self._pipeline.catalog
        return catalog.get(name).info.input_schema if catalog.has(name) else {}


def _params_of(body: dict[str, Any]) -> dict[str, Any]:
    params = body.get("params", {})
    if not isinstance(params, dict) or set(body) - {"params"}:
        raise InvalidInputError(_BODY_SHAPE)
    return params


def cli_routes(
    pipeline: Pipeline, options: HttpOptions, *, explainer: Explainer | None = None
) -> list[HotRoute]:
    """The CLI channel's routes, served under `CLI_PREFIX` on the API port."""
    shared = WorkflowRoutes(pipeline, Channel.CLI, options)
    surfaces = SurfaceRoutes(pipeline, Channel.CLI, options, explainer)
    return [
        HotRoute("GET", f"{CLI_PREFIX}/workflows", shared.list_workflows),
        HotRoute("GET", f"{CLI_PREFIX}/workflows/{{name}}", shared.describe),
        HotRoute("POST", f"{CLI_PREFIX}/workflows/{{name}}/run", CliRun(pipeline, options).run),
        *surfaces.routes(health=f"{CLI_PREFIX}/health", explain=f"{CLI_PREFIX}/authz/explain"),
    ]
