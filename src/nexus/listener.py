"""The app's listening sockets: the API and MCP ports, and one MCP listener per tenant `mcp_port`.

Tenant listeners follow the registry while serving and are served by the app's own uvicorn server
(same protocol, shared connection state, closed by its shutdown). Part of the composition root
with `app.py`; what a tenant port means (which tenant, whether it may be reached) is core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from nexus.channels.mcp import PRM_PATH, TENANT_PORT_SCOPE
from nexus.core.tenancy.directory import TenantDirectory
from nexus.core.tenancy.routing import TenantRouter
from nexus.errors import ConfigurationError

log = logging.getLogger("nexus.listener")


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` and listening (port 0 asks the OS for a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without it
    # every keep-alive response waits out Nagle against the client's delayed ACK (about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    # Left non-inheritable (Python's default): uvloop spawns children (the SQLite audit appender)
    # without closing inheritable descriptors, and a child holding a listener keeps its port open.
    return sock


class TenantPortApp:
    """The MCP app as a tenant's own port serves it: the MCP path and its protected-resource
    metadata only, each request's scope naming the port it came in on."""

    __slots__ = ("_mcp", "_paths", "_port")

    def __init__(self, mcp: ASGIApp, port: int, path: str) -> None:
        self._mcp = mcp
        self._port = port
        self._paths = frozenset({path, PRM_PATH, f"{PRM_PATH}{path}"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self._paths:
            await Response(status_code=404)(scope, receive, send)
            return
        await self._mcp({**scope, TENANT_PORT_SCOPE: self._port}, receive, send)


@dataclass(eq=False)
class _Listener:
    tenant_id: str
    server: asyncio.AbstractServer


class TenantListeners:
    """One listener per tenant with an `mcp_port`, opened and closed as the registry changes.

    `ports` (tenant id -> port) and `unbound` (tenant id -> a port that could not be bound) are
    replaced whole on each change, so other threads may read them.
    """

    def __init__(
        self,
        server: Any,
        routes: MutableMapping[int, ASGIApp],
        mcp: ASGIApp,
        *,
        host: str,
        path: str,
        own_ports: Iterable[int],
    ) -> None:
        """`server` is the started `uvicorn.Server`; `routes` is the port -> app table its
        dispatcher reads, where each tenant port's app is put before its listener opens."""
        self._server = server
        self._routes = routes
        self._mcp = mcp
        self._host = host
        self._path = path
        self._own_ports = frozenset(own_ports)
        self._open: dict[int, _Listener] = {}
        self._reserved: dict[int, socket.socket] = {}
        self._warned: set[tuple[str, int]] = set()
        self._lock = asyncio.Lock()
        self._synced: TenantRouter | None = None
        self.ports: Mapping[str, int] = MappingProxyType({})
        self.unbound: Mapping[str, int] = MappingProxyType({})

    async def sync(self, directory: TenantDirectory) -> None:
        """Listen on the port of every tenant in the directory's index in force (suspended ones
        too: core refuses their calls) and on no other; ports that cannot be bound are warned
        about and tried again at the next sync."""
        async with self._lock:
            router = directory.router  # read under the lock: never an index older than the last
            wanted = {port: tenant.tenant_id for port, tenant in router.index.by_port.items()}
            for port in [port for port in self._open if port not in wanted]:
                self._close(port)
            unbound: dict[str, int] = {}
            for port, tenant_id in wanted.items():
                listener = self._open.get(port)
                if listener is not None:
                    listener.tenant_id = tenant_id
                elif not await self._open_port(port, tenant_id):
                    unbound[tenant_id] = port
            self._synced = router
            self.ports = MappingProxyType({ln.tenant_id: port for port, ln in self._open.items()})
            self.unbound = MappingProxyType(unbound)

    async def follow(self, directory: TenantDirectory, every_s: float) -> None:
        """Sync with the directory every `every_s` until cancelled: its index is reloaded once it
        is older than its refresh interval, so tenants made elsewhere get listeners within that."""
        while True:
            await asyncio.sleep(every_s)
            try:
                router = await directory.current()
                if router is not self._synced or self.unbound:
                    await self.sync(directory)
            except Exception:  # serving goes on with the listeners in hand
                log.warning("tenant MCP listeners could not follow the registry; trying again", exc_info=True)

    @contextlib.asynccontextmanager
    async def reserving(self, tenant_id: str, port: int | None) -> AsyncIterator[None]:
        """Hold `port` while tenant `tenant_id` is being created, so a port another program
        holds refuses the tenant instead of leaving it without a listener.

        Raises:
            ConfigurationError: the port cannot be bound on this app's host.
        """
        if port is None or port in self._own_ports or port in self._open or port in self._reserved:
            yield  # the registry refuses a port already routed; core refuses the app's own
            return
        try:
            sock = listen(self._host, port)
        except OSError as exc:
            raise ConfigurationError(
                f"mcp_port {port} of tenant {tenant_id!r} is taken on {self._host} "
                f"({exc.strerror or 'cannot bind'}); choose a free port."
            ) from None
        self._reserved[port] = sock
        try:
            yield
        finally:
            if self._reserved.get(port) is sock:  # not taken over by a sync: the tenant failed
                del self._reserved[port]
                sock.close()

    def close(self) -> None:
        """Stop listening on every tenant port (the server's shutdown closes its connections)."""
        for port in list(self._open):
            self._close(port, end_connections=False)
        for sock in self._reserved.values():
            sock.close()
        self._reserved.clear()
        self.ports = MappingProxyType({})

    async def _open_port(self, port: int, tenant_id: str) -> bool:
        if port in self._own_ports:
            self._warn(tenant_id, port, "it is this app's own API or MCP port")
            return False
        sock = self._reserved.pop(port, None)
        try:
            if sock is None:
                sock = listen(self._host, port)
            self._routes[port] = TenantPortApp(self._mcp, port, self._path)
            config = self._server.config
            served = await asyncio.get_running_loop().create_server(
                self._protocol, sock=sock, ssl=config.ssl, backlog=config.backlog
            )
        except OSError as exc:
            if sock is not None:
                sock.close()
            self._warn(tenant_id, port, exc.strerror or "it cannot be bound")
            return False
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        self._server.servers.append(served)  # closed by the server's shutdown with its own
        self._open[port] = _Listener(tenant_id, served)
        self._warned.discard((tenant_id, port))
        return True

    def _close(self, port: int, *, end_connections: bool = True) -> None:
        listener = self._open.pop(port)
        listener.server.close()
        with contextlib.suppress(ValueError):
            self._server.servers.remove(listener.server)
        # The port's app stays in `routes`: requests still arriving on its open connections are
        # refused by core, since the port names no tenant any more.
        if end_connections:
            for connection in list(self._server.server_state.connections):
                address = getattr(connection, "server", None)
                if address is not None and address[1] == port:
                    connection.shutdown()

    def _protocol(self, _loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
        """A connection's protocol, made as uvicorn's `Server.startup` makes it."""
        server = self._server
        protocol: asyncio.Protocol = server.config.http_protocol_class(
            config=server.config,
            server_state=server.server_state,
            app_state=server.lifespan.state,
            _loop=_loop,
        )
        return protocol

    def _warn(self, tenant_id: str, port: int, reason: str) -> None:
        if (tenant_id, port) not in self._warned:
            self._warned.add((tenant_id, port))
            log.warning(
                "tenant %r has no MCP listener: port %d on %s: %s; trying again at the next sync",
                tenant_id,
                port,
                self._host,
                reason,
            )
