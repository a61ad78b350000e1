"""The MCP channel: one tool and one resource per workflow, plus the health detail as a resource,
over streamable HTTP (stateless, JSON) and stdio.

Parses MCP requests into `Invocation`s, calls the pipeline and renders its answers as MCP results or
JSON-RPC errors; with auth on, HTTP callers without a valid credential are refused before JSON-RPC.
Built on the official `mcp` SDK's low-level server. Never imports backends.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from nexus.channels import codec
from nexus.channels.asgi import (
    JSON,
    MAX_TRACE_PARENT,
    PROBLEM,
    credential_from,
    read_body,
    request_id_from,
    trace_parent_from,
)
from nexus.channels.http import HEALTH_AUDIT, ClusterViewSource, health_check, problem_response
from nexus.core.pipeline import ALL_WORKFLOWS, UNKNOWN_WORKFLOW, Pipeline, new_request_id
from nexus.core.policy.permission import HEALTH_SURFACE, RESOURCES_SURFACE
from nexus.core.types import Action, Channel, Credential, Invocation, RouteKind, TenantRoute, WorkflowInfo
from nexus.errors import AuthenticationError, InvalidInputError, NexusError, WorkflowNotFoundError
from nexus.settings import McpSettings

log = logging.getLogger("nexus.channels.mcp")

CREDENTIAL_ENV = "NEXUS_TOKEN"
PRM_PATH = "/.well-known/oauth-protected-resource"
TENANT_PORT_SCOPE = "nexus.tenant_port"
"""Set in the ASGI scope of a connection that came in on a tenant's own MCP port."""
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
WORKFLOW_URI = "nexus://workflows/"
HEALTH_URI = "nexus://health"
# The 2025 protocols' code for an unknown resource; 2026-07-28 answers invalid params instead (SEP-2164).
RESOURCE_NOT_FOUND = -32002
_HEALTH_RESOURCE = types.Resource(
    uri=HEALTH_URI,
    name="health",
    description="This server's health: status, version, workflow count, readiness (and cluster nodes).",
    mime_type=JSON,
)


@dataclass(frozen=True, slots=True)
class _Caller:
    """Who sent the MCP request being handled, as the transport saw it."""

    request_id: str
    credential: Credential | None
    client_addr: str
    route: TenantRoute | None = None
    trace_parent: str | None = None
    """The W3C traceparent of the request's `_meta`, else of its HTTP request (raw, bounded)."""


def _tool(info: WorkflowInfo) -> types.Tool:
    return types.Tool(
        name=info.name, description=info.description, input_schema=codec.as_plain(info.input_schema)
    )


def _resource(info: WorkflowInfo) -> types.Resource:
    return types.Resource(
        uri=f"{WORKFLOW_URI}{info.name}", name=info.name, description=info.description, mime_type=JSON
    )


def _plain_text(document: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Encode once: the plain JSON value for structuredContent and the same as text."""
    raw = codec.dumps(document)
    return codec.loads_object(raw, what="The result"), raw.decode()


def _problem(error: NexusError, request_id: str) -> dict[str, Any]:
    problem = error.to_problem()
    problem["request_id"] = request_id
    return problem


def tool_error(error: NexusError, request_id: str) -> types.CallToolResult:
    """A failure the model should see: isError with the problem document (code, retry_after, node_id)."""
    structured, text = _plain_text(_problem(error, request_id))
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=structured, is_error=True
    )


def rpc_error(error: NexusError, request_id: str) -> MCPError:
    """A failure of the request itself: JSON-RPC invalid params, or an opaque internal error."""
    if error.mcp == "invalid_params":
        return MCPError(code=types.INVALID_PARAMS, message=error.message, data=_problem(error, request_id))
    if error.mcp == "internal_error":
        return internal_error(request_id)
    # Failures of requests that have no tool result (tools/list): a client error or a server one.
    code = types.INVALID_REQUEST if error.http_status < 500 else types.INTERNAL_ERROR
    return MCPError(code=code, message=error.message, data=_problem(error, request_id))


def resource_not_found(error: NexusError, request_id: str, uri: str, protocol_version: str) -> MCPError:
    """An unknown or invisible resource, in the code of the protocol era the client speaks."""
    code = types.INVALID_PARAMS if protocol_version in MODERN_PROTOCOL_VERSIONS else RESOURCE_NOT_FOUND
    return MCPError(code=code, message=error.message, data={**_problem(error, request_id), "uri": uri})


async def _always_ready() -> bool:
    return True


def internal_error(request_id: str) -> MCPError:
    message = f"Internal error; request id {request_id}."
    return MCPError(code=types.INTERNAL_ERROR, message=message, data={"request_id": request_id})


class McpChannel:
    """The MCP server of one app: `asgi_app` for the MCP port, `running()` around serving it."""

    def __init__(
        self,
        pipeline: Pipeline,
        settings: McpSettings,
        *,
        auth_enabled: bool,
        version: str,
        host: str = "127.0.0.1",
        is_ready: Callable[[], Awaitable[bool]] = _always_ready,
        tenant_routes: bool = False,
        cluster: ClusterViewSource | None = None,
    ) -> None:
        """`is_ready` tells whether every backend answers, and `cluster` (with clustering) the live
        nodes, for the health resource.

        With `tenant_routes`, `/t/{tenant}<path>` is served too (each with its own protected
        resource metadata), and connections on a tenant's own port name that tenant."""
        self._pipeline = pipeline
        self._path = settings.path
        self._tenant_routes = tenant_routes
        self._auth_enabled = auth_enabled
        self.authorization_servers: tuple[str, ...] = ()
        """Issuers of the tokens this resource accepts (the API port's URL once it is bound)."""
        self._tools: dict[str, tuple[WorkflowInfo, types.Tool]] = {}
        self._manager: StreamableHTTPSessionManager | None = None
        self._local_credential: Credential | None = None
        self._health = health_check(pipeline, is_ready, version, cluster)
        # On a loopback host, check Host/Origin as the SDK does, so a web page cannot reach the
        # server through DNS rebinding; on other hosts the operator's proxy owns that.
        self._security = (
            TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
            )
            if host in _LOOPBACK
            else None
        )
        self.server: Server[Any] = Server(
            settings.server_name,
            version=version,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_read_resource=self._read_resource,
            # Our schemas declare no Mcp-Param headers; without this the SDK would run tools/list
            # (an audited pipeline call) before every tools/call just to find that out.
            get_tool_input_schema=_no_header_schema,
        )

    # -- serving -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the SDK's session manager; `asgi_app` answers 503 outside this block."""
        manager = StreamableHTTPSessionManager(
            app=self.server,
            json_response=True,
            stateless=True,
            security_settings=self._security,
            max_request_body_size=DEFAULT_MAX_REQUEST_BODY_SIZE,
        )
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def serve_stdio(self) -> None:
        """Serve one MCP client over stdin/stdout until it disconnects.

        Raises:
            AuthenticationError: auth is on and `NEXUS_TOKEN` is missing or not a valid key.
        """
        token = os.environ.get(CREDENTIAL_ENV, "").strip()
        credential = Credential(scheme="bearer", secret=token) if token else None
        if self._auth_enabled:
            # Refuse before serving, as the HTTP transport does; each call is still checked again.
            probe = Invocation(new_request_id(), Channel.MCP, ALL_WORKFLOWS, {}, credential=credential)
            await self._pipeline.authenticate(probe)
        self._local_credential = credential
        async with stdio_server() as (read_stream, write_stream):
            await self.server.run(read_stream, write_stream, self.server.create_initialization_options())

    async def asgi_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app of the MCP port: streamable HTTP at the configured path, 404 elsewhere."""
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if self._auth_enabled and path.startswith(PRM_PATH):
            resource = path.removeprefix(PRM_PATH) or self._path
            if resource == self._path or self._tenant_path(resource) is not None:
                await self._resource_metadata(scope, receive, send, resource)
                return
        if path != self._path and self._tenant_path(path) is None:
            await Response(status_code=404)(scope, receive, send)
            return
        manager = self._manager
        if manager is None:
            await Response(status_code=503, headers={"retry-after": "1"})(scope, receive, send)
            return
        if self._auth_enabled:
            admitted = await self._admit(scope, receive, send)
            if admitted is None:
                return
            receive = admitted
        await manager.handle_request(scope, receive, send)

    # -- transport authentication ----------------------------------------------------------------

    def _origin(self, scope: Scope) -> str:
        """This server as the caller addressed it (the Host header, checked by the SDK on loopback)."""
        host = Headers(scope=scope).get("host")
        if not host:
            server = scope.get("server") or ("127.0.0.1", 0)
            host = f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}"

    def _tenant_path(self, path: str) -> str | None:
        """The tenant segment of `/t/{tenant}<path>` when tenant routes are served (core decides
        whether it names a tenant), else None."""
        if not self._tenant_routes or not path.startswith("/t/") or not path.endswith(self._path):
            return None
        segment = path[3 : -len(self._path)]
        return segment if 0 < len(segment) <= 64 and "/" not in segment else None

    def _route(self, scope: Scope) -> TenantRoute | None:
        """How an MCP request names its tenant: the tenant's own listener, or its path."""
        if not self._tenant_routes:
            return None
        port = scope.get(TENANT_PORT_SCOPE)
        if port is not None:
            return TenantRoute(RouteKind.PORT, str(port))
        segment = self._tenant_path(scope["path"])
        return TenantRoute(RouteKind.PATH, segment) if segment is not None else None

    async def _resource_metadata(self, scope: Scope, receive: Receive, send: Send, resource: str) -> None:
        """RFC 9728 protected resource metadata: what this resource is and who issues its tokens."""
        origin = self._origin(scope)
        document = {
            "resource": f"{origin}{resource}",
            "authorization_servers": list(self.authorization_servers),
            "bearer_methods_supported": ["header"],
            "resource_name": self.server.name,
            "resource_documentation": f"{self.authorization_servers[0]}/docs"
            if self.authorization_servers
            else None,
        }
        body = codec.dumps({k: v for k, v in document.items() if v is not None})
        await Response(body, media_type="application/json", headers={"cache-control": "max-age=300"})(
            scope, receive, send
        )

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Authenticate at transport; the replaying `receive` on success, None once refused."""
        headers = Headers(scope=scope)
        request_id = request_id_from(headers)
        credential = credential_from(headers)
        try:
            body = await read_body(receive, DEFAULT_MAX_REQUEST_BODY_SIZE)
            invocation = Invocation(
                request_id=request_id,
                channel=Channel.MCP,
                workflow=_called_tool(body),
                inputs={},
                credential=credential,
                client_addr=_client_addr(scope),
                route=self._route(scope),
                trace_parent=trace_parent_from(headers),
            )
            await self._pipeline.authenticate(invocation)
        except AuthenticationError as error:
            metadata = f"{self._origin(scope)}{PRM_PATH}{scope['path']}"
            await _unauthorized(error, request_id, credential is not None, metadata)(scope, receive, send)
            return None
        except NexusError as error:
            await problem_response(error, request_id, self._path)(scope, receive, send)
            return None
        return _replay(body, receive)

    # -- handlers ------------------------------------------------------------------------------------

    def _caller(self, ctx: ServerRequestContext[Any, Any]) -> _Caller:
        request = ctx.request
        traced = _meta_trace_parent(ctx.meta)
        if isinstance(request, Request):
            client = request.client
            return _Caller(
                request_id=request_id_from(request.headers),
                credential=credential_from(request.headers),
                client_addr=client.host if client else "",
                route=self._route(request.scope),
                trace_parent=traced or trace_parent_from(request.headers),
            )
        return _Caller(
            request_id=new_request_id(),
            credential=self._local_credential,
            client_addr="",
            trace_parent=traced,
        )

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = self._caller(ctx)
        invocation = Invocation(
            caller.request_id,
            Channel.MCP,
            ALL_WORKFLOWS,
            {},
            caller.credential,
            caller.client_addr,
            route=caller.route,
            trace_parent=caller.trace_parent,
        )
        try:
            infos = await self._pipeline.list_workflows(invocation)
        except NexusError as error:
            raise rpc_error(error, caller.request_id) from None
        return types.ListToolsResult(tools=[self._tool_for(info) for info in infos])

    def _tool_for(self, info: WorkflowInfo) -> types.Tool:
        cached = self._tools.get(info.name)
        if cached is not None and cached[0] is info:
            return cached[1]
        tool = _tool(info)
        self._tools[info.name] = (info, tool)
        return tool

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = self._caller(ctx)
        invocation = Invocation(
            request_id=caller.request_id,
            channel=Channel.MCP,
            workflow=params.name,
            inputs=params.arguments or {},
            credential=caller.credential,
            client_addr=caller.client_addr,
            route=caller.route,
            trace_parent=caller.trace_parent,
        )
        try:
            result = await self._pipeline.execute(invocation)
            structured, text = _plain_text(codec.result_document(result))
        except NexusError as error:
            if error.mcp in ("invalid_params", "internal_error"):
                raise rpc_error(error, caller.request_id) from None
            return tool_error(error, caller.request_id)
        except Exception:
            # Only rendering can get here (the pipeline maps its own surprises); stay opaque.
            log.exception("cannot render the result", extra={"request_id": caller.request_id})
            raise internal_error(caller.request_id) from None
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structured_content=structured
        )

    async def _list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        caller = self._caller(ctx)
        invocation = self._invocation(caller, ALL_WORKFLOWS, RESOURCES_SURFACE)
        try:
            infos = await self._pipeline.list_workflows(invocation)
        except NexusError as error:
            raise rpc_error(error, caller.request_id) from None
        resources = [*map(_resource, infos)]
        if await self._pipeline.permits(self._invocation(caller, HEALTH_AUDIT, HEALTH_SURFACE)):
            resources.append(_HEALTH_RESOURCE)
        return types.ListResourcesResult(resources=resources)

    async def _read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        caller = self._caller(ctx)
        uri = str(params.uri)
        try:
            if uri == HEALTH_URI:
                health = self._invocation(caller, HEALTH_AUDIT, HEALTH_SURFACE)
                document = await self._pipeline.inspect(health, self._health)
            else:
                document = await self._describe_resource(caller, uri)
            text = codec.dumps(document).decode()
        except WorkflowNotFoundError as error:
            raise resource_not_found(error, caller.request_id, uri, ctx.protocol_version) from None
        except NexusError as error:
            raise rpc_error(error, caller.request_id) from None
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type=JSON, text=text)]
        )

    async def _describe_resource(self, caller: _Caller, uri: str) -> dict[str, Any]:
        """A workflow's resource document: what `describe` shows, never its attributes."""
        name = uri.removeprefix(WORKFLOW_URI) if uri.startswith(WORKFLOW_URI) else ""
        if not name:
            # Not a URI of ours: still admitted and audited, then answered like an unknown workflow.
            missing = WorkflowNotFoundError(f"No resource {uri[:128]!r}.")
            invocation = self._invocation(caller, UNKNOWN_WORKFLOW, RESOURCES_SURFACE)
            refused = await self._pipeline.refuse(invocation, missing)
            raise missing if isinstance(refused, WorkflowNotFoundError) else refused
        info = await self._pipeline.describe(self._invocation(caller, name, RESOURCES_SURFACE))
        return codec.info_document(info, with_schema=True)

    @staticmethod
    def _invocation(caller: _Caller, workflow: str, surface: str) -> Invocation:
        """A read on `surface`: workflows as resources, or the health detail."""
        return Invocation(
            caller.request_id,
            Channel.MCP,
            workflow,
            {},
            caller.credential,
            caller.client_addr,
            action=Action.READ,
            surface=surface,
            route=caller.route,
            trace_parent=caller.trace_parent,
        )


def _no_header_schema(name: str) -> Mapping[str, Any] | None:
    return None


def _meta_trace_parent(meta: Mapping[str, Any] | None) -> str | None:
    """The `traceparent` a client put in the request's `_meta` (as the SDK's client does)."""
    value = meta.get("traceparent") if meta else None
    return value[:MAX_TRACE_PARENT] if isinstance(value, str) and value else None


def _client_addr(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _called_tool(body: bytes) -> str:
    """The tool a tools/call body names (so a refusal is audited against it), else "*"."""
    try:
        message = codec.loads_object(body, what="The body")
    except InvalidInputError:
        return ALL_WORKFLOWS
    params = message.get("params")
    if message.get("method") == "tools/call" and isinstance(params, dict):
        name = params.get("name")
        if isinstance(name, str) and name:
            return name
    return ALL_WORKFLOWS


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the inner app the body already read, then the real channel."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


def _unauthorized(error: NexusError, request_id: str, had_credential: bool, metadata: str) -> Response:
    problem = _problem(error, request_id)
    # RFC 6750: no error code when no credential came; RFC 9728: where the resource metadata is.
    challenge = f'Bearer realm="nexus", resource_metadata="{metadata}"'
    if had_credential:
        challenge += ', error="invalid_token"'
    headers = {
        "www-authenticate": challenge,
        "x-request-id": request_id,
    }
    return Response(codec.dumps(problem), status_code=401, media_type=PROBLEM, headers=headers)
