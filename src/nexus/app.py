"""The composition root: settings -> backends -> pipeline -> channels. The only module that sees all.

`Nexus` is wiring: it keeps settings and registrations, builds the running parts at start and
serves the API and MCP ports from one event loop. Features live in core, backends and channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from nexus.core.audit_chain import AuditVerification
from nexus.core.auth.model import User
from nexus.core.catalog import Catalog, Registration
from nexus.core.identity import IssuedKey
from nexus.core.tenancy.model import Tenant
from nexus.core.types import ApiKey, AuditRecord
from nexus.errors import ConfigurationError
from nexus.settings import (
    ApiSettings,
    AuthSettings,
    Authz,
    McpSettings,
    MonitoringSettings,
    Options,
    Settings,
    TenancySettings,
    check_auth_in_use,
    check_authz,
    check_options,
)
from nexus.workflow import Workflow

if TYPE_CHECKING:
    from nexus.assembly import Assembly
    from nexus.enterprise.authz import ABACPolicyEngine, RBACManager
    from nexus.enterprise.tenancy import TenantManager
    from nexus.listener import TenantListeners

_PUBLIC = frozenset({"auth", "monitoring", "api", "mcp", "tenancy"})
DEFAULT_STATE_URL = "sqlite:///./nexus.db"


class Nexus:
    """A workflow platform: register workflows, then serve them over REST, CLI and MCP."""

    auth: AuthSettings
    monitoring: MonitoringSettings
    api: ApiSettings
    mcp: McpSettings
    tenancy: TenancySettings
    _options: Options
    _settings: Settings
    _catalog: Catalog
    _server: Any
    _serving: bool
    _assembly: Assembly | None
    _listeners: TenantListeners | None
    _authz: Authz

    def __init__(
        self,
        *,
        api_port: int = 8000,
        mcp_port: int = 3000,
        host: str = "127.0.0.1",
        enable_auth: bool = False,
        enable_monitoring: bool = True,
        rate_limit: int | None = None,
        state_url: str | None = None,
        redis_url: str | None = None,
        title: str = "Nexus",
    ) -> None:
        """`state_url` and `redis_url` left out come from NEXUS_STATE_URL and NEXUS_REDIS_URL, as
        a deployment gives them (the document's production block names neither); without those,
        state is the embedded SQLite file ./nexus.db and there is no Redis. `app.tenancy.base_domain`
        starts as NEXUS_BASE_DOMAIN for the same reason."""
        if state_url is None:
            state_url = os.environ.get("NEXUS_STATE_URL") or DEFAULT_STATE_URL
        if redis_url is None:
            redis_url = os.environ.get("NEXUS_REDIS_URL") or None
        options = Options(
            api_port, mcp_port, host, enable_auth, enable_monitoring, rate_limit, state_url, redis_url, title
        )
        check_options(options)
        settings = Settings()
        object.__setattr__(self, "_options", options)
        object.__setattr__(self, "_settings", settings)
        object.__setattr__(self, "_catalog", Catalog())
        object.__setattr__(self, "_server", None)
        object.__setattr__(self, "_serving", False)
        object.__setattr__(self, "_assembly", None)
        object.__setattr__(self, "_listeners", None)
        object.__setattr__(self, "_authz", Authz())
        for section in settings.sections():
            object.__setattr__(self, section.section, section)
        # Like the URLs, the API's tenant domain is the deployment's to give.
        settings.tenancy.base_domain = os.environ.get("NEXUS_BASE_DOMAIN") or None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"Nexus has no attribute {name!r} to set; configure through the constructor or the sections "
            f"{', '.join(sorted(_PUBLIC))} (for example app.auth.api_key_cache_seconds = 1)."
        )

    @property
    def options(self) -> Options:
        return self._options

    def register(
        self,
        name: str,
        workflow: Workflow,
        *,
        description: str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        tenant_scoped: bool = False,
        tenants: Iterable[str] | None = None,
    ) -> Registration:
        """Serve `workflow` as `name` on every channel.

        `tags` are names permissions and policies match (e.g. "reports"); `metadata` holds the
        attributes policies read as `resource.*` (e.g. classification_level), never shown to callers.
        `tenant_scoped=True` serves it on tenants' routes (every tenant's, or those in `tenants`),
        each run with the caller's tenant context, and not on the platform's own routes.
        """
        catalog: Catalog = self._catalog
        manager = self.tenancy.manager
        if tenant_scoped and manager is not None:
            scope = None if tenants is None else frozenset(tenants)
            manager.policy.check_registration(name, tenant_scoped, scope)
        entry = catalog.register(
            name,
            workflow,
            description=description,
            tags=tags,
            metadata=metadata,
            tenant_scoped=tenant_scoped,
            tenants=tenants,
        )
        live = self._assembly
        if live is not None and live.tenancy is not None and tenant_scoped:
            try:
                live.check_tools_now(catalog)
            except ConfigurationError:
                catalog.unregister(name)
                raise
        return entry

    register_workflow = register
    """The source document's name for `register` (users of the Kailash SDK write it)."""

    # -- authorization ---------------------------------------------------------------------------

    def set_rbac_manager(self, rbac: RBACManager) -> None:
        """Decide every call on every channel by these roles (see README, "Authorization").

        Changes to `rbac` take effect on the next call; setting another manager while serving
        takes effect at once too.
        """
        from nexus.enterprise.authz import RBACManager

        if not isinstance(rbac, RBACManager):
            raise ConfigurationError(f"set_rbac_manager needs an RBACManager, got {type(rbac).__name__}.")
        self._reauthorize(replace(self._authz, rbac=rbac))

    def set_abac_engine(self, abac: ABACPolicyEngine) -> None:
        """After RBAC allows a call, every policy of `abac` that applies to it must be satisfied."""
        from nexus.enterprise.authz import ABACPolicyEngine

        if not isinstance(abac, ABACPolicyEngine):
            raise ConfigurationError(f"set_abac_engine needs an ABACPolicyEngine, got {type(abac).__name__}.")
        self._reauthorize(replace(self._authz, abac=abac))

    def _reauthorize(self, authz: Authz) -> None:
        """Keep `authz` (checked first when serving, so a refused one is not kept) and, when
        serving, put its decision point in force at once."""
        live = self._assembly
        if live is not None and live.pipeline is not None:
            from nexus.assembly import build_authorizer

            check_authz(self.options, authz)
            live.pipeline.authorizer = build_authorizer(authz, live.clock)
        object.__setattr__(self, "_authz", authz)

    # -- serving ---------------------------------------------------------------------------------

    def start(self, *, api_port: int | None = None, mcp_port: int | None = None) -> None:
        """Serve the API and MCP ports until interrupted (Ctrl-C stops cleanly).

        `api_port` / `mcp_port` override the constructor's for this run (as `nexus serve
        --api-port` does).
        """
        sockets = self._bind(api_port, mcp_port)
        # Ctrl-C is how a served app is stopped: once the server has shut down cleanly, start()
        # returns instead of ending the user's script with a traceback.
        with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(self._serve(sockets, lambda: None))

    def start_in_thread(self, *, timeout_s: float = 30.0) -> RunningNexus:
        """Serve from a background thread; returns once both ports answer. For tests and embedding."""
        sockets = self._bind()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    runner.run(self._serve(sockets, ready.set))
            except BaseException as exc:  # noqa: BLE001  # handed to the starting thread, which raises it
                failure.append(exc)
                ready.set()

        thread = threading.Thread(target=run, name="nexus-server", daemon=True)
        thread.start()
        if not ready.wait(timeout_s):
            self._request_stop()
            raise ConfigurationError(f"The server did not start within {timeout_s} s.")
        if failure:
            raise failure[0]
        return RunningNexus(
            self, thread, self.options.host, *_ports(sockets), metrics_port=_metrics_port(sockets)
        )

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[RunningNexus]:
        """Serve on the current event loop for the duration of the block."""
        sockets = self._bind()
        ready = asyncio.Event()
        task = asyncio.create_task(self._serve(sockets, ready.set))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()
        try:
            yield RunningNexus(
                self, None, self.options.host, *_ports(sockets), metrics_port=_metrics_port(sockets)
            )
        finally:
            self._request_stop()
            await task

    def _bind(self, api_port: int | None = None, mcp_port: int | None = None) -> list[socket.socket]:
        if self._serving:
            raise ConfigurationError("This app is already serving.")
        opts = replace(
            self.options,
            api_port=self.options.api_port if api_port is None else api_port,
            mcp_port=self.options.mcp_port if mcp_port is None else mcp_port,
        )
        check_options(opts)
        for section in self._settings.sections():
            section.validate()  # every section first, so a bad value leaves none of them frozen
        check_auth_in_use(opts, self._settings.auth)
        check_authz(opts, self._authz)
        self._check_tenancy(opts)
        from nexus.assembly import compliance_in_force

        compliance_in_force(opts, self._settings.auth)  # a mode's floors and second factor, before listening
        from nexus.enterprise.monitoring import monitoring_in_use
        from nexus.listener import listen

        wanted = [("api_port", opts.api_port), ("mcp_port", opts.mcp_port)]
        monitoring = monitoring_in_use(opts, self._settings.monitoring)
        if monitoring is not None and monitoring.metrics_port is not None:
            wanted.append(("metrics_port", monitoring.metrics_port))  # third: see _metrics_port
        sockets: list[socket.socket] = []
        with contextlib.ExitStack() as opened:
            for name, port in wanted:
                try:
                    sockets.append(listen(opts.host, port))
                except OSError as exc:
                    raise ConfigurationError(
                        f"Cannot listen on {opts.host}:{port} ({name}): {exc.strerror}."
                    ) from exc
                opened.callback(sockets[-1].close)  # closed again if anything below fails
            for section in self._settings.sections():
                section.freeze()
            opened.pop_all()
        object.__setattr__(self, "_serving", True)
        return sockets

    async def _serve(self, sockets: list[socket.socket], on_ready: Callable[[], object]) -> None:
        import uvicorn

        from nexus.assembly import assemble

        api_port, mcp_port = _ports(sockets)
        # The ports actually bound (0 asks the OS): the app's own URLs (token issuer, WebAuthn
        # origin, SAML endpoints) are built from them.
        bound = replace(self.options, api_port=api_port, mcp_port=mcp_port)
        try:
            assembly = await assemble(bound, self._settings, self._catalog, authz=self._authz)
        except BaseException:
            self._unbind(sockets)
            raise
        try:
            ports = dict(zip(_ports(sockets), assembly.apps, strict=True))
            metrics_port = _metrics_port(sockets)
            if metrics_port is not None:
                ports[metrics_port] = assembly.metrics_app
                if assembly.tenancy is not None:  # no tenant's mcp_port may take it either
                    assembly.tenancy.app_ports |= {metrics_port}
            if assembly.mcp is not None:
                api_port = _ports(sockets)[0]
                host = self.options.host
                assembly.mcp.authorization_servers = (
                    f"http://{f'[{host}]' if ':' in host else host}:{api_port}",
                )
            config = uvicorn.Config(
                _PortDispatch(ports),
                lifespan="off",
                log_level="warning",
                access_log=False,
                server_header=False,
                # Forwarded headers are not trusted from anyone until proxies are configured.
                proxy_headers=False,
                http="httptools",
                ws="none",
            )
            config.load()
            server = uvicorn.Server(config)
            server.lifespan = config.lifespan_class(config)
            object.__setattr__(self, "_server", server)
            object.__setattr__(self, "_assembly", assembly)
            async with assembly.channels_running():
                with server.capture_signals():
                    # uvicorn's serve() split open, so readiness is signalled, not polled for.
                    await server.startup(sockets=sockets)
                    if not server.should_exit:
                        async with self._tenant_listeners(assembly, server, ports):
                            on_ready()
                            await server.main_loop()
                    if server.started:
                        await server.shutdown(sockets=sockets)
        finally:
            object.__setattr__(self, "_server", None)
            object.__setattr__(self, "_assembly", None)
            await assembly.close()
            self._unbind(sockets)

    @contextlib.asynccontextmanager
    async def _tenant_listeners(
        self, assembly: Assembly, server: Any, routes: dict[int, Any]
    ) -> AsyncIterator[None]:
        """With MCP routing by port offset, a listener on each tenant's `mcp_port`, following the
        registry (`routes` is the dispatcher's port -> app table, holding the app's own ports)."""
        tenancy = assembly.tenancy
        if tenancy is None or assembly.mcp is None or tenancy.directory.router.rules.mcp != "port_offset":
            yield
            return
        from nexus.listener import TenantListeners

        listeners = TenantListeners(
            server,
            routes,
            assembly.mcp.asgi_app,
            host=self.options.host,
            path=self.mcp.path,
            own_ports=tuple(routes),
        )
        try:
            await tenancy.directory.current()
            await listeners.sync(tenancy.directory)
            # Polled more often than the directory refreshes, so a change made on another node
            # gets its listener soon after this node's index sees it.
            every_s = float(self.tenancy.refresh_seconds) / 4
            follower = asyncio.create_task(listeners.follow(tenancy.directory, every_s))
            object.__setattr__(self, "_listeners", listeners)
            tenancy.ports = listeners  # creates and deletes through any channel keep them in step
            try:
                yield
            finally:
                tenancy.ports = None
                object.__setattr__(self, "_listeners", None)
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
        finally:
            listeners.close()

    def _check_tenancy(self, options: Options) -> None:
        """Tenant-scoped workflows need tenants; registrations must obey the sharing policy."""
        from nexus.enterprise.tenancy import manager_in_use

        manager = manager_in_use(options.enable_auth, self._settings.tenancy, self._settings.auth)
        catalog: Catalog = self._catalog
        for entry in catalog.all():
            if not entry.tenant_scoped:
                continue
            if manager is None:
                raise ConfigurationError(
                    f"Workflow {entry.name!r} is tenant_scoped but the app serves no tenants: set "
                    "app.tenancy.manager (or use create_production_nexus(tenant_manager=...))."
                )
            manager.policy.check_registration(entry.name, True, entry.tenants)

    def _unbind(self, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            sock.close()
        for section in self._settings.sections():
            section.thaw()
        object.__setattr__(self, "_serving", False)

    def serve_mcp_stdio(self) -> None:
        """Serve MCP over standard input and output (`nexus mcp MODULE:APP`)."""
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(self._serve_stdio())

    async def _serve_stdio(self) -> None:
        check_auth_in_use(self.options, self._settings.auth)
        check_authz(self.options, self._authz)
        for section in self._settings.sections():
            section.freeze()
        try:
            from nexus.assembly import assemble

            assembly = await assemble(
                self.options, self._settings, self._catalog, authz=self._authz, cluster_member=False
            )
            try:
                if assembly.mcp is None:
                    raise ConfigurationError("The MCP channel is not available.")
                # The background work of a served app too: backend probes, signing keys rotated
                # elsewhere, the audit retention's purge.
                async with assembly.channels_running():
                    await assembly.mcp.serve_stdio()
            finally:
                await assembly.close()
        finally:
            for section in self._settings.sections():
                section.thaw()

    def _request_stop(self) -> None:
        server = self._server
        if server is not None:
            server.should_exit = True

    # -- tenants -----------------------------------------------------------------------------------

    async def create_tenant(
        self, tenant_id: str, name: str, config: Mapping[str, Any] | None = None
    ) -> Tenant:
        """Add a tenant (the document's config keys: api_subdomain, cli_prefix, mcp_port,
        quota_profile, compliance_level); with strict isolation its schema is made first.

        While serving with MCP routing by port offset, its `mcp_port` listens on return.

        Raises:
            ConfigurationError: a config key or value is wrong, a route is already another
                tenant's, or the `mcp_port` is this app's API or MCP port or taken on its host.
        """
        async with self._admin() as admin:
            return await admin.require_tenancy().create(self._catalog, tenant_id, name, config)

    async def list_tenants(self) -> list[Tenant]:
        async with self._admin() as admin:
            return list(await admin.require_tenancy().directory.list())

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._admin() as admin:
            return await admin.require_tenancy().directory.get(tenant_id)

    async def suspend_tenant(self, tenant_id: str) -> bool:
        """Refuse every call of the tenant on every channel (at once here, within
        `app.tenancy.refresh_seconds` on other nodes); True if it was active."""
        async with self._admin() as admin:
            return await admin.require_tenancy().directory.set_suspended(tenant_id, True)

    async def resume_tenant(self, tenant_id: str) -> bool:
        async with self._admin() as admin:
            return await admin.require_tenancy().directory.set_suspended(tenant_id, False)

    async def share_tenant_data(self, owner_id: str, reader_id: str) -> None:
        """Let tenant `reader_id` read tenant `owner_id`'s data (its tables, those made later too).
        Needs strict isolation on PostgreSQL and `cross_tenant_policies={"data_sharing": True}`."""
        async with self._admin() as admin:
            await admin.require_tenancy().share_data(owner_id, reader_id, share=True)

    async def unshare_tenant_data(self, owner_id: str, reader_id: str) -> None:
        async with self._admin() as admin:
            await admin.require_tenancy().share_data(owner_id, reader_id, share=False)

    async def delete_tenant(self, tenant_id: str) -> bool:
        """Remove the tenant, and with strict isolation its schema and everything in it; while
        serving, its MCP listener closes."""
        async with self._admin() as admin:
            return await admin.require_tenancy().delete(tenant_id)

    async def share_workflow(self, name: str, tenant_id: str) -> Tenant:
        """Serve the tenant-scoped workflow `name`, registered with `tenants=[...]`, on tenant
        `tenant_id`'s routes too (a platform administrator's act; `cross_tenant_policies`
        workflow_sharing "admin_only" or True). At once here, within `app.tenancy.refresh_seconds`
        on other nodes; returns the tenant with its `shared_workflows`.

        Raises:
            ConfigurationError: workflow_sharing is False; the workflow is unknown, not
                tenant_scoped or served to every tenant already; or the tenant's `mcp_tools`
                quota has no room for it.
            TenantNotFoundError: there is no such tenant.
        """
        async with self._admin() as admin:
            return await admin.require_tenancy().share_workflow(self._catalog, name, tenant_id, share=True)

    async def unshare_workflow(self, name: str, tenant_id: str) -> Tenant:
        """Take back a share made by `share_workflow` (always allowed; a workflow the tenant was
        never shared is left as it is, one registered for it is refused)."""
        async with self._admin() as admin:
            return await admin.require_tenancy().share_workflow(self._catalog, name, tenant_id, share=False)

    # -- API keys ----------------------------------------------------------------------------------

    async def create_api_key(
        self, name: str, *, roles: Iterable[str] = (), tenants: Iterable[str] = ()
    ) -> IssuedKey:
        """Create a key, accepted on the routes of `tenants` (none: the platform's); the plaintext
        in the result is shown once and never stored."""
        async with self._admin() as admin:
            return await admin.create_api_key(name, roles=roles, tenants=tenants)

    async def list_api_keys(self) -> list[ApiKey]:
        async with self._admin() as admin:
            return await admin.list_api_keys()

    async def revoke_api_key(self, key_id: str) -> bool:
        async with self._admin() as admin:
            return await admin.revoke_api_key(key_id)

    # -- users -------------------------------------------------------------------------------------

    async def create_user(
        self,
        username: str,
        password: str,
        *,
        roles: Iterable[str] = (),
        attributes: Mapping[str, Any] | None = None,
        phone: str | None = None,
        tenants: Iterable[str] = (),
    ) -> User:
        """Create a local user (argon2id password hash) who may log in on the routes of `tenants`
        (none: the platform's); needs `enable_auth=True`."""
        async with self._admin() as admin:
            return await admin.require_identity().create_user(
                username, password, roles=roles, attributes=attributes, phone=phone, tenants=tenants
            )

    async def list_users(self) -> list[User]:
        async with self._admin() as admin:
            return await admin.require_identity().list_users()

    async def update_user(
        self,
        username: str,
        *,
        roles: Iterable[str] | None = None,
        attributes: Mapping[str, Any] | None = None,
        phone: str | None = None,
        disabled: bool | None = None,
        tenants: Iterable[str] | None = None,
    ) -> User:
        """Change a user; new roles or tenants, or disabling, also end the user's sessions."""
        async with self._admin() as admin:
            return await admin.require_identity().update_user(
                username,
                roles=roles,
                attributes=attributes,
                phone=phone,
                disabled=disabled,
                tenants=tenants,
            )

    async def set_password(self, username: str, password: str) -> None:
        """Set a local user's password; the user's sessions end."""
        async with self._admin() as admin:
            await admin.require_identity().set_password(username, password)

    async def delete_user(self, username: str) -> bool:
        async with self._admin() as admin:
            return await admin.require_identity().delete_user(username)

    async def revoke_sessions(self, username: str) -> int:
        """End every session of a user, and with them every token derived from them."""
        async with self._admin() as admin:
            return await admin.require_identity().revoke_sessions(username)

    async def rotate_signing_key(self, *, algorithm: str = "EdDSA") -> str:
        """Sign tokens with a new key from now on (its `kid` is returned); tokens signed with the
        old keys stay valid until they expire. Serving nodes pick the new key up within 30 s."""
        async with self._admin() as admin:
            return await admin.rotate_signing_key(algorithm)

    async def audit_log(
        self,
        *,
        workflow: str | None = None,
        principal_id: str | None = None,
        tenant_id: str | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """The newest audit records first, optionally for one workflow, principal or tenant (a
        tenant's records are the calls that came by its routes, refused attempts on them included)."""
        async with self._admin() as admin:
            records = await admin.state.audit.query(
                workflow=workflow, principal_id=principal_id, tenant_id=tenant_id, limit=limit
            )
            return list(records)

    async def purge_audit_log(self) -> int:
        """Delete the audit records older than `app.auth.audit_log_retention` (or the compliance
        mode's floor) now, as a serving app does hourly; how many went (0 when kept forever).

        Raises:
            AuditIntegrityError: the hash chain is broken among them; nothing of it is deleted.
        """
        async with self._admin() as admin:
            return await admin.purge_audit()

    async def verify_audit_log(self) -> AuditVerification:
        """Recompute the audit trail's hash chain: intact or not, how many records were checked,
        and the first broken sequence number with the reason (`nexus audit verify`)."""
        async with self._admin() as admin:
            return await admin.state.audit.verify()

    @contextlib.asynccontextmanager
    async def _admin(self) -> AsyncIterator[Assembly]:
        live = self._assembly
        if live is not None and live.loop is asyncio.get_running_loop():
            yield live
            return
        from nexus.assembly import assemble

        assembly = await assemble(self.options, self._settings, self._catalog, serving=False)
        try:
            yield assembly
        finally:
            await assembly.close()
        if live is not None:
            live.forget_keys()
            # Tenants changed here take effect on this app's serving loop at once, not at its
            # next refresh.
            if live.loop.is_running():
                reload = asyncio.run_coroutine_threadsafe(live.refresh_tenants(), live.loop)
                with contextlib.suppress(TimeoutError):  # stopping meanwhile: nothing left to refresh
                    await asyncio.wait_for(asyncio.wrap_future(reload), timeout=10)


class RunningNexus:
    """A serving app: where it listens, and how to stop it."""

    def __init__(
        self,
        app: Nexus,
        thread: threading.Thread | None,
        host: str,
        api_port: int,
        mcp_port: int,
        *,
        metrics_port: int | None = None,
    ) -> None:
        """`metrics_port`: the monitoring backend's own metrics port, when it has one."""
        self.app = app
        self._thread = thread
        self._host = f"[{host}]" if ":" in host else host
        self.api_url = f"http://{host}:{api_port}"
        self.mcp_url = f"http://{host}:{mcp_port}{app.mcp.path}"
        self.api_port = api_port
        self.mcp_port = mcp_port
        self.metrics_port = metrics_port
        self.metrics_url: str | None = None
        """Where the metrics port serves the metrics (None: on the API port only)."""
        if metrics_port is not None:
            self.metrics_url = f"http://{self._host}:{metrics_port}{app.monitoring.metrics_path}"

    @property
    def tenant_ports(self) -> Mapping[str, int]:
        """Tenant id -> the port of its own MCP listener, for each tenant this app listens for."""
        listeners = self.app._listeners
        return listeners.ports if listeners is not None else MappingProxyType({})

    def tenant_mcp_url(self, tenant_id: str) -> str:
        """The MCP URL of a tenant's own listener (`http://host:<mcp_port><mcp path>`)."""
        port = self.tenant_ports.get(tenant_id)
        if port is None:
            raise ConfigurationError(f"This app has no MCP listener for tenant {tenant_id[:64]!r}.")
        return f"http://{self._host}:{port}{self.app.mcp.path}"

    def stop(self, timeout_s: float = 30.0) -> None:
        self.app._request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)


class _PortDispatch:
    """One ASGI server, several listening ports: route each connection by the port it arrived on."""

    def __init__(self, apps: dict[int, Any]) -> None:
        self._apps = apps

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        server = scope.get("server")
        app = self._apps.get(server[1]) if server else None
        if app is None:
            raise RuntimeError("connection on a port with no app")
        await app(scope, receive, send)


def _ports(sockets: list[socket.socket]) -> tuple[int, int]:
    """The (api, mcp) ports actually bound (port 0 asks the OS for a free one)."""
    api, mcp = (sock.getsockname()[1] for sock in sockets[:2])
    return api, mcp


def _metrics_port(sockets: list[socket.socket]) -> int | None:
    """The monitoring backend's metrics port actually bound (bound third), if it has one."""
    return int(sockets[2].getsockname()[1]) if len(sockets) > 2 else None


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return None
    return uvloop.new_event_loop


_ENV_OPTIONS: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("NEXUS_STATE_URL", "state_url", str),
    ("NEXUS_REDIS_URL", "redis_url", str),
    ("NEXUS_HOST", "host", str),
    ("NEXUS_API_PORT", "api_port", int),
    ("NEXUS_MCP_PORT", "mcp_port", int),
    ("NEXUS_RATE_LIMIT", "rate_limit", int),
)


def create_production_nexus(
    *,
    tenant_manager: TenantManager | None = None,
    tenant_routing: Mapping[str, str] | None = None,
    base_domain: str | None = None,
    trusted_proxies: Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> Nexus:
    """A `Nexus` as production runs it: identities and monitoring on, settings from the
    environment where the call leaves them out (NEXUS_STATE_URL, NEXUS_REDIS_URL, NEXUS_HOST,
    NEXUS_API_PORT, NEXUS_MCP_PORT, NEXUS_RATE_LIMIT, NEXUS_BASE_DOMAIN, NEXUS_TRUSTED_PROXIES as
    a comma-separated list), and tenants when `tenant_manager` is given."""
    env = os.environ if environ is None else environ
    chosen: dict[str, Any] = {"enable_auth": True, "enable_monitoring": True}
    for variable, option, parse in _ENV_OPTIONS:
        raw = env.get(variable)
        if raw is None or option in options:
            continue
        try:
            chosen[option] = parse(raw)
        except ValueError:
            raise ConfigurationError(f"{variable} must be a whole number, got {raw[:32]!r}.") from None
    chosen.update(options)
    app = Nexus(**chosen)
    if tenant_routing is not None:
        from nexus.core.tenancy.routing import RoutingRules

        routing = {**app.tenancy.routing, **dict(tenant_routing)}
        RoutingRules.from_mapping(routing)  # a wrong mode is an error here, not at start
        app.tenancy.routing = routing
    if tenant_manager is not None:
        app.tenancy.manager = tenant_manager
    domain = base_domain if base_domain is not None else env.get("NEXUS_BASE_DOMAIN")
    if domain:
        app.tenancy.base_domain = domain
    proxies = trusted_proxies if trusted_proxies is not None else _split(env.get("NEXUS_TRUSTED_PROXIES"))
    app.tenancy.trusted_proxies = list(proxies)
    return app


def _split(raw: str | None) -> list[str]:
    return [item.strip() for item in (raw or "").split(",") if item.strip()]
