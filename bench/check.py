"""Correctness before timing: one request must come back with the right sum, else the row fails.

Also the request bodies and headers both the check and wrk send, so they cannot drift apart.
"""

from __future__ import annotations

import http.client
import json
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


class WrongAnswerError(Exception):
    """The server answered, but not with the sum: timing it would measure the wrong thing."""


def post(
    port: int, path: str, body: str, headers: Mapping[str, str], timeout_s: float = 10.0
) -> tuple[int, str]:
    """POST to 127.0.0.1:port and return the status and the body text."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("POST", path, body=body.encode(), headers=dict(headers))
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
