"""Correctness before timing: one request must come back with the right sum, else the row fails;
for the full rows, tenancy must be deciding (routing, membership) and counting (quotas) too.

Also the request bodies and headers both the check and wrk send, so they cannot drift apart.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Mapping
from typing import Any

A, B = 1234, 4321
SUM = A + B
REST_PATH = "/workflows/add/execute"
REST_BODY = json.dumps({"inputs": {"a": A, "b": B}})
MCP_PATH = "/mcp"
MCP_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": A, "b": B}},
    }
)
# Stateless streamable HTTP takes a tools/call without initialize when the client names a
# handshake-era protocol version and accepts both JSON and SSE.
MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
}


TENANT_NOT_FOUND = "tenant_not_found"
METRICS_PATH = "/metrics"
TENANT_USAGE = "nexus_tenant_resource_usage"
REQUESTS_PER_HOUR = "api_requests_per_hour"
CONCURRENT_WORKFLOWS = "concurrent_workflows"
_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class WrongAnswerError(Exception):
    """The server answered, but not with the sum: timing it would measure the wrong thing."""


def post(
    port: int, path: str, body: str, headers: Mapping[str, str], timeout_s: float = 10.0
) -> tuple[int, str]:
    """POST to 127.0.0.1:port and return the status and the body text (a Host header is sent as given)."""
    return _send("POST", port, path, body, headers, timeout_s)


def get(port: int, path: str, headers: Mapping[str, str], timeout_s: float = 10.0) -> tuple[int, str]:
    """GET from 127.0.0.1:port and return the status and the body text."""
    return _send("GET", port, path, None, headers, timeout_s)


def _send(
    method: str, port: int, path: str, body: str | None, headers: Mapping[str, str], timeout_s: float
) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=None if body is None else body.encode(), headers=dict(headers))
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def check_rest(status: int, text: str) -> None:
    """Require 200 and {"outputs": {"add": {"result": SUM}}} (extra fields allowed)."""
    if status != 200:
        raise WrongAnswerError(f"HTTP {status}: {text[:200]}")
    try:
        result = json.loads(text)["outputs"]["add"]["result"]
    except (ValueError, KeyError, TypeError) as exc:
        raise WrongAnswerError(f"no outputs.add.result in {text[:200]}") from exc
    if result != SUM:
        raise WrongAnswerError(f"outputs.add.result is {result!r}, expected {SUM}")


def check_mcp(status: int, text: str) -> None:
    """Require a JSON-RPC result, not an error, whose structured or text content holds SUM."""
    if status != 200:
        raise WrongAnswerError(f"HTTP {status}: {text[:200]}")
    try:
        result = json.loads(text)["result"]
    except (ValueError, KeyError, TypeError) as exc:
        raise WrongAnswerError(f"no JSON-RPC result in {text[:200]}") from exc
    if result.get("isError"):
        raise WrongAnswerError(f"the tool reported an error: {text[:200]}")
    texts = [item.get("text", "") for item in result.get("content", []) if isinstance(item, dict)]
    if not (contains_value(result.get("structuredContent"), SUM) or any(_text_holds(t, SUM) for t in texts)):
        raise WrongAnswerError(f"{SUM} is in neither structuredContent nor text content: {text[:200]}")


def _text_holds(text: str, value: int) -> bool:
    try:
        return contains_value(json.loads(text), value)
    except ValueError:
        return False


def contains_value(document: Any, value: int) -> bool:
    """Whether `value` appears anywhere in a JSON document (as a number, not a bool)."""
    if isinstance(document, dict):
        return any(contains_value(v, value) for v in document.values())
    if isinstance(document, list):
        return any(contains_value(v, value) for v in document)
    return isinstance(document, int) and not isinstance(document, bool) and document == value


def check_tenant_refused(status: int, text: str) -> None:
    """Require 404 `tenant_not_found`: a tenant's key off its tenant's route reaches nothing."""
    if status != 404 or _code(text) != TENANT_NOT_FOUND:
        raise WrongAnswerError(
            f"tenancy is not deciding: off the tenant's route the key got HTTP {status}: {text[:200]}"
        )


def check_authorization_refused(status: int, text: str) -> None:
    """Require 403, or 404 for a hidden workflow, on the tenant's route: a `tenant_not_found` would
    be tenancy refusing the call before authorization decided anything."""
    if status not in (403, 404) or _code(text) == TENANT_NOT_FOUND:
        raise WrongAnswerError(f"authorization is not deciding: sealed answered HTTP {status}: {text[:200]}")


def _code(text: str) -> object:
    """The `code` of a problem document, or None."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document.get("code") if isinstance(document, dict) else None


def tenant_usage(metrics: str, tenant: str) -> dict[str, float]:
    """Each resource's value of `nexus_tenant_resource_usage` for `tenant`, from Prometheus text."""
    usage: dict[str, float] = {}
    for name, labels, value in _SAMPLE.findall(metrics):
        found = dict(_LABEL.findall(labels))
        if name == TENANT_USAGE and found.get("tenant") == tenant and "resource" in found:
            usage[found["resource"]] = float(value)
    return usage


def check_quota_counted(before: Mapping[str, float], after: Mapping[str, float]) -> None:
    """Between two readings one call ran on the tenant's route: it must have counted as exactly one
    more request this hour, and taken a concurrent-workflow lease (the series exists) and released
    it (back at 0)."""
    requests = after.get(REQUESTS_PER_HOUR, 0.0) - before.get(REQUESTS_PER_HOUR, 0.0)
    if requests != 1:
        raise WrongAnswerError(f"the requests-per-hour quota counted {requests:g} for one call, not 1")
    running = after.get(CONCURRENT_WORKFLOWS)
    if running != 0:
        state = "never taken" if running is None else f"at {running:g} after the run ended"
        raise WrongAnswerError(f"the concurrent-workflow lease was {state}")
