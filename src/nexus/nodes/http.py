"""`HTTPRequestNode`: one HTTP request through a shared httpx2 `AsyncClient` per event loop.

Redirects are followed only to the same host (scheme, host and port) unless explicitly allowed, so a
remote server cannot bounce a request, with its headers, to an address of its choosing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import quote

import httpx2

from nexus.errors import DependencyUnavailableError, WorkflowDefinitionError, WorkflowFailedError
from nexus.workflow import Node, NodeTimeoutError, Param
from nexus.workflow.template import fill_nested, fill_template, nested_template_names, template_names

MAX_REDIRECTS = 10
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_clients: dict[asyncio.AbstractEventLoop, httpx2.AsyncClient] = {}


def client_for_loop() -> httpx2.AsyncClient:
    """Return the client shared by every HTTP node on the running loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        for stale in [other for other in _clients if other.is_closed()]:
            del _clients[stale]
        client = _clients[loop] = httpx2.AsyncClient(follow_redirects=False)
    return client


async def close_clients() -> None:
    """Close the shared client of the running event loop."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


class HTTPRequestNode(Node):
    """Send `method` `url`; outputs `{"status_code", "headers", "body"}` (JSON body decoded).

    Config: `url`, `method` (GET), `headers`, `json` or `body`, `timeout` (10 s), `follow_redirects`
    (True, same host only), `allow_cross_host_redirects` (False). `${name}` templates in the url
    (URL-encoded), headers, json and body come from inputs; inputs `json` / `body` replace configured ones.
    """

    outputs: ClassVar[tuple[str, ...]] = ("status_code", "headers", "body")
    config_keys: ClassVar[frozenset[str]] = frozenset(
        {"url", "method", "headers", "json", "body", "follow_redirects", "allow_cross_host_redirects"}
    )
    default_timeout_s: ClassVar[float | None] = 10.0

    def configure(self) -> None:
        url = self.config.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise self._definition_error("'url' must be an http(s) URL")
        method = self.config.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise self._definition_error(f"unsupported method {method!r}")
        headers = self.config.get("headers", {})
        if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
            raise self._definition_error("'headers' must map names to strings")
        if "json" in self.config and "body" in self.config:
            raise self._definition_error("give 'json' or 'body', not both")
        for flag in ("follow_redirects", "allow_cross_host_redirects"):
            if not isinstance(self.config.get(flag, False), bool):
                raise self._definition_error(f"'{flag}' must be a bool")
        self._url, self._method, self._headers = url, method.upper(), dict(headers)
        self._follow = bool(self.config.get("follow_redirects", True))
        self._cross_host = bool(self.config.get("allow_cross_host_redirects", False))
        names = template_names(url) + nested_template_names(self._headers)
        names += nested_template_names(self.config.get("json")) + nested_template_names(
            self.config.get("body")
        )
        specs = {name: Param(object, required=False) for name in names}
        specs.update({"json": Param(object, required=False), "body": Param(str, required=False)})
        self._specs: Mapping[str, Param] = MappingProxyType(specs)

    def _definition_error(self, problem: str) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(
            f"node '{self.node_id}' (HTTPRequestNode): {problem}", node_id=self.node_id
        )

    def input_specs(self) -> Mapping[str, Param]:
        return self._specs

    async def invoke(self, supplied: Mapping[str, Any], context: Mapping[str, Any]) -> Mapping[str, Any]:
        inputs = self.resolve_inputs(supplied, context)
        values = {**inputs, **context}
        url = fill_template(
            self._url, values, encode=lambda value: quote(value, safe=""), node_id=self.node_id
        )
        headers = fill_nested(self._headers, values, node_id=self.node_id)
        content: dict[str, Any] = {}
        if "json" in inputs:
            content["json"] = inputs["json"]
        elif "body" in inputs:
            content["content"] = inputs["body"]
        client = client_for_loop()
        request = client.build_request(self._method, url, headers=headers, timeout=self.timeout_s, **content)
        response = await self._send(client, request)
        return {
            "status_code": response.status_code,
            "headers": dict(response.headers),
            "body": _body(response),
        }

    async def _send(self, client: httpx2.AsyncClient, request: httpx2.Request) -> httpx2.Response:
        origin = _origin(request.url)
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send_once(client, request)
            next_request = response.next_request
            if not self._follow or next_request is None:
                return response
            if _origin(next_request.url) != origin and not self._cross_host:
                raise WorkflowFailedError(
                    f"node '{self.node_id}' failed: redirect to another host "
                    f"({next_request.url.host}) refused",
                    node_id=self.node_id,
                )
            request = next_request
        raise WorkflowFailedError(
            f"node '{self.node_id}' failed: more than {MAX_REDIRECTS} redirects", node_id=self.node_id
        )

    async def _send_once(self, client: httpx2.AsyncClient, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await client.send(request)
            await response.aread()
        except httpx2.TimeoutException as exc:
            raise NodeTimeoutError(
                f"node '{self.node_id}': {request.url.host} did not answer within {self.timeout_s:g} s",
                node_id=self.node_id,
            ) from exc
        except httpx2.TransportError as exc:
            raise DependencyUnavailableError(
                f"node '{self.node_id}': cannot reach {request.url.host} ({type(exc).__name__})",
                node_id=self.node_id,
            ) from exc
        return response

    @classmethod
    async def release_loop_resources(cls) -> None:
        await close_clients()


def _origin(url: httpx2.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _body(response: httpx2.Response) -> Any:
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            return response.json()
        except ValueError:
            return response.text
    return response.text
