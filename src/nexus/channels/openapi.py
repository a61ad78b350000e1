"""The OpenAPI document of the REST channel, built from the catalog.

Each workflow's declared input schema is the request schema of its execute path, so OpenAPI,
MCP and the CLI describe one and the same contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from nexus.core.catalog import Catalog

_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details with a stable `code`.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "required": ["title", "status", "code"],
}

_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "run_id": {"type": "string"},
        "workflow": {"type": "string"},
        "outputs": {"type": "object", "additionalProperties": {"type": "object"}},
        "duration_ms": {"type": "number"},
    },
    "required": ["run_id", "workflow", "outputs", "duration_ms"],
}

_ERRORS = {
    str(status): {"description": text, **_PROBLEM}
    for status, text in (
        ("401", "Not authenticated"),
        ("403", "Forbidden"),
        ("404", "Unknown workflow"),
        ("413", "Body too large"),
        ("422", "Invalid input, or the workflow failed"),
        ("429", "Rate limited"),
        ("503", "Dependency unavailable"),
    )
}


def _execute_operation(name: str, summary: str, input_schema: dict[str, Any]) -> dict[str, Any]:
    body = {"type": "object", "properties": {"inputs": input_schema}, "additionalProperties": False}
    return {
        "post": {
            "summary": summary,
            "operationId": f"execute_{name}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {
                    "description": "Outputs by node id",
                    "content": {"application/json": {"schema": _RESULT_SCHEMA}},
                },
                **_ERRORS,
            },
        }
    }


def build_openapi(app: FastAPI, catalog: Catalog, *, list_workflows: bool) -> dict[str, Any]:
    """Generic routes always; one path per workflow only when anyone may see the names (auth off)."""
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    paths: dict[str, Any] = doc.setdefault("paths", {})
    generic = {"type": "object", "additionalProperties": True}
    paths["/workflows/{name}/execute"] = _execute_operation("workflow", "Execute a workflow", generic)
    paths["/workflows/{name}/execute"]["parameters"] = [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    paths["/workflows"] = {
        "get": {
            "summary": "List the workflows the caller may see",
            "responses": {"200": {"description": "Listing"}},
        }
    }
    if list_workflows:
        for entry in catalog.all():
            summary = entry.info.description or f"Execute {entry.name}"
            schema = dict(entry.info.input_schema)
            paths[f"/workflows/{entry.name}/execute"] = _execute_operation(entry.name, summary, schema)
    doc.setdefault("components", {}).setdefault("schemas", {})["Problem"] = _PROBLEM_SCHEMA
    return doc
