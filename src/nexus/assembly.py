"""Builds the running parts of an app from its settings: backends, the pipeline, the channel apps.

Part of the composition root with `app.py`; it alone picks backend implementations by URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from nexus.backends.auth.signing import SigningKeys
from nexus.backends.call_observer import open_call_observer
from nexus.backends.lease_gauge import MemoryLeaseGauge
from nexus.backends.prometheus import PrometheusMeter
from nexus.backends.sql import SqlState, open_state
from nexus.channels import codec
from nexus.channels.auth import AuthRoutes
from nexus.channels.cli.server import cli_routes
from nexus.channels.http import CLI_PREFIX, HttpOptions, build_http_app, build_metrics_app
from nexus.channels.mcp import McpChannel
from nexus.core.audit import Auditor
from nexus.core.auth.authenticator import CredentialAuthenticator, StepUp
from nexus.core.auth.model import FactorKind, SigningKey
from nexus.core.auth.policy import MfaPolicy, SessionPolicy, ThrottlePolicy
from nexus.core.auth.ports import EphemeralStore, SessionSeats, SessionStore
from nexus.core.auth.service import IdentityParts, IdentityService
from nexus.core.auth.throttle import LoginThrottle
from nexus.core.authorization import AllowAll, Authorizer
from nexus.core.catalog import Catalog
from nexus.core.cluster import ClusterMembership, ClusterNode, ClusterRegistry, new_node_id
from nexus.core.compliance import (
    AuditRetention,
    CompliancePolicy,
    Framework,
    check_requirements,
    compliance_policy,
)
from nexus.core.health import Probe, Readiness
from nexus.core.identity import (
    AnonymousAuthenticator,
    ApiKeyAuthenticator,
    Authenticator,
    IssuedKey,
    new_api_key,
)
from nexus.core.pipeline import Pipeline
from nexus.core.ports import CallObserver, Clock, CounterStore, Meter
from nexus.core.ratelimit import Limiter, NoLimit, RateLimiter
from nexus.core.telemetry import NoopCallObserver, NoopMeter, SystemClock
from nexus.core.tenancy.context import StorageGate, TenantContext, TenantPlacement, run_context
from nexus.core.tenancy.directory import TenantDirectory
from nexus.core.tenancy.gate import TenantGate
from nexus.core.tenancy.model import IsolationLevel, Resource, Tenant, TenantConfig, check_tenant_id
from nexus.core.tenancy.ports import LeaseGauge, TenantDataStore
from nexus.core.tenancy.quota import TenantQuotas
from nexus.core.tenancy.routing import RoutingRules
from nexus.core.tenancy.seats import CliSessionSeats
from nexus.core.types import ApiKey, Channel
from nexus.enterprise.monitoring import monitoring_in_use
from nexus.enterprise.tenancy import TenantManager, manager_in_use
from nexus.errors import ConfigurationError, TenantConflictError, TenantNotFoundError
from nexus.settings import AuthSettings, Authz, Options, Settings, check_clustering
from nexus.workflow import AsyncLocalRuntime
from nexus.workflow.runtime import release_loop_resources

if TYPE_CHECKING:
    from nexus.enterprise.auth import MultiFactorAuth

VERSION = "0.1.0"
KEY_REFRESH_S = 30.0


@dataclass(eq=False)
class IdentityRuntime:
    """The identity side of a running app: the service, and what must be closed with it."""

    service: IdentityService
    closers: tuple[Callable[[], Awaitable[None]], ...]
    keys: SigningKeys
    api_keys_enabled: bool


class TenantPorts(Protocol):
    """The per-tenant MCP listeners of a serving app (`nexus.listener.TenantListeners`)."""

    def reserving(self, tenant_id: str, port: int | None) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold `port` while the tenant is created; `ConfigurationError` when it is taken."""
        ...

    async def sync(self, directory: TenantDirectory) -> None:
        """Listen on exactly the ports of the tenants in the directory."""
        ...


@dataclass(eq=False)
class TenancyRuntime:
    """The tenant side of a running app: the registry as a routing directory, quotas, the gate."""

    manager: TenantManager
    directory: TenantDirectory
    gate: TenantGate
    leases: LeaseGauge
    clock: Clock
    app_ports: frozenset[int] = frozenset()
    """The app's own API and MCP ports, which no tenant's `mcp_port` may be."""
    data: TenantDataStore | None = None
    """Where tenants' own data lives (PostgreSQL); None on SQLite state (moderate or basic)."""
    storage: dict[tuple[str, datetime, int], StorageGate] = field(default_factory=dict)
    """One storage gate per tenant (by id and creation, so a new tenant of a deleted one's id
    starts afresh) and limit, for the life of the app (it caches measurements)."""
    storage_refresh_s: float = 30.0
    """How often a tenant's data is measured for its storage_mb quota."""
    ports: TenantPorts | None = None
    """While serving with MCP port-offset routing: the listeners, kept in step with every
    create and delete made through this runtime (Python, REST or CLI alike)."""

    def context(self, tenant: Tenant) -> Mapping[str, Any]:
        """The runtime context of one run for `tenant` (`tenant_context`, `tenant_id`)."""
        data = self.data
        isolation = self.manager.isolation_level
        placement = data.placement(tenant) if data is not None else TenantPlacement(isolation)
        return run_context(TenantContext(tenant, placement, storage=self._storage_gate(tenant)))

    def _storage_gate(self, tenant: Tenant) -> StorageGate | None:
        data = self.data
        limit = self.gate.quotas.book.profile_of(tenant).limit(Resource.STORAGE_MB)
        if data is None or limit is None:
            return None
        key = (tenant.tenant_id, tenant.created_at, limit)
        gate = self.storage.get(key)
        if gate is None:
            measure = functools.partial(data.size_bytes, tenant)
            gate = self.storage[key] = StorageGate(
                tenant.tenant_id, limit, measure, self.clock, refresh_s=self.storage_refresh_s
            )
        return gate

    async def create(
        self, catalog: Catalog, tenant_id: str, name: str, config: Mapping[str, Any] | None
    ) -> Tenant:
        """Add a tenant; while serving with port-offset routing its `mcp_port` listens on return.

        Raises:
            ConfigurationError: a config key or value is wrong, a route is another tenant's, or
                the `mcp_port` is this app's own port or taken on its host.
        """
        ports = self.ports
        if ports is None:
            return await self._create(catalog, tenant_id, name, config)
        port = TenantConfig.from_mapping(config).mcp_port
        async with ports.reserving(check_tenant_id(tenant_id), port):
            tenant = await self._create(catalog, tenant_id, name, config)
            await ports.sync(self.directory)
        return tenant

    async def _create(
        self, catalog: Catalog, tenant_id: str, name: str, config: Mapping[str, Any] | None
    ) -> Tenant:
        tenant = Tenant(check_tenant_id(tenant_id), name, TenantConfig.from_mapping(config), self.clock.now())
        if tenant.config.mcp_port in self.app_ports:
            raise ConfigurationError(
                f"mcp_port {tenant.config.mcp_port} is this app's own API or MCP port; give tenant "
                f"{tenant.tenant_id!r} a port of its own."
            )
        if tenant.config.mcp_port is not None and self.directory.router.rules.mcp != "port_offset":
            raise ConfigurationError(
                f"Tenant {tenant.tenant_id!r} names mcp_port {tenant.config.mcp_port}, but MCP routes "
                "tenants by path here (tenant_routing mcp='path'): nothing would listen on it. Leave "
                "it out, or route MCP by 'port_offset'."
            )
        self.gate.quotas.book.check_profile(tenant.config.quota_profile)
        self.gate.quotas.check_tools(tenant, self._tools_of(catalog, tenant))
        if await self.directory.get(tenant.tenant_id) is not None:
            raise TenantConflictError(f"A tenant with id {tenant.tenant_id!r} already exists.")
        if self.data is not None:
            await self.data.provision(tenant)  # its schema (and role) first: no call finds it half-made
        try:
            await self.directory.add(tenant)
        except BaseException:
            # Undo the schema only when no tenant of this id got registered: the add may have
            # committed before failing (a reload, a cancellation), or a concurrent create of the
            # same id won, and either way the registered tenant owns that schema and role.
            if self.data is not None and await self._unregistered(tenant.tenant_id):
                await self.data.drop(tenant)
            raise
        return tenant

    async def _unregistered(self, tenant_id: str) -> bool:
        try:
            return await self.directory.get(tenant_id) is None
        except Exception:  # noqa: BLE001  # the registry cannot say: keep the data, never risk a tenant's
            return False

    async def delete(self, tenant_id: str) -> bool:
        """Remove the tenant from every route, then its own data (strict: schema, role, database)."""
        tenant = await self.directory.get(check_tenant_id(tenant_id))
        if tenant is None:
            return False
        deleted = await self.directory.delete(tenant.tenant_id)
        for key in [key for key in self.storage if key[0] == tenant.tenant_id]:
            await self.storage.pop(key).close()
        if self.ports is not None:
            await self.ports.sync(self.directory)  # its listener closes before the call returns
        if self.data is not None:
            from nexus.nodes.sql import dispose_engines

            await dispose_engines()  # pooled connections into a tenant's database would hold it open
            await self.data.drop(tenant)
        return deleted

    async def share_data(self, owner_id: str, reader_id: str, *, share: bool) -> None:
        """Grant (or take back) `reader_id` read access to `owner_id`'s data."""
        if share and not self.manager.policy.data_sharing:
            raise ConfigurationError(
                "cross_tenant_policies['data_sharing'] is False: no tenant may read another's data."
            )
        owner, reader = await self._existing(owner_id), await self._existing(reader_id)
        if owner.tenant_id == reader.tenant_id:
            raise ConfigurationError("A tenant reads its own data already.")
        if self.data is None or self.manager.isolation_level is not IsolationLevel.STRICT:
            raise ConfigurationError(
                "Sharing data between tenants grants one tenant's database role another's tables: "
                "it needs strict isolation on PostgreSQL."
            )
        if share:
            await self.data.grant_read(owner, reader)
        else:
            await self.data.revoke_read(owner, reader)

    async def share_workflow(self, catalog: Catalog, name: str, tenant_id: str, *, share: bool) -> Tenant:
        """Serve the tenant-scoped workflow `name` on `tenant_id`'s routes too (or take that back):
        at once on this node, within `refresh_seconds` on the others. The tenant as it is afterwards.

        Taking a share back is always allowed, whatever the policy and even for a workflow no
        longer registered; only what was shared can be taken back.

        Raises:
            ConfigurationError: workflow_sharing is False, the workflow is unknown, the platform's,
                served to every tenant already (or to this one by its registration, when taking
                back), or one more tool would pass the tenant's `mcp_tools`.
            TenantNotFoundError: there is no tenant `tenant_id`.
        """
        if share and not self.manager.policy.may_share_workflow(platform_admin=True):
            raise ConfigurationError(
                "cross_tenant_policies['workflow_sharing'] is False: no workflow is shared between tenants."
            )
        tenant = await self._existing(tenant_id)
        if not share and name in tenant.shared_workflows:
            return await self._set_shared(tenant, name, share=False)
        entry = catalog.shareable(name)
        if not share:
            if entry.serves(tenant.tenant_id):
                raise ConfigurationError(
                    f"Workflow {name!r} is registered for tenant {tenant.tenant_id!r} (tenants=[...]), "
                    "not shared with it: only a share can be taken back."
                )
            return tenant  # nothing shared, nothing served: already as asked
        if entry.serves(tenant.tenant_id, tenant.shared_workflows):
            return tenant  # served already, by its registration or an earlier share
        self.gate.quotas.check_tools(tenant, self._tools_of(catalog, tenant) + 1)
        return await self._set_shared(tenant, name, share=True)

    async def _set_shared(self, tenant: Tenant, name: str, *, share: bool) -> Tenant:
        changed = await self.directory.set_workflow_shared(tenant.tenant_id, name, share)
        if changed is None:  # deleted meanwhile
            raise TenantNotFoundError(f"No tenant {tenant.tenant_id!r}.")
        return changed

    async def _existing(self, tenant_id: str) -> Tenant:
        tenant = await self.directory.get(check_tenant_id(tenant_id))
        if tenant is None:
            raise TenantNotFoundError(f"No tenant {tenant_id!r}.")
        return tenant

    def check_tools(self, catalog: Catalog) -> None:
        """Every tenant exposes at most its `mcp_tools` workflows over MCP (when enabling more)."""
        for tenant in self.gate.directory.router.index.by_id.values():
            self.gate.quotas.check_tools(tenant, self._tools_of(catalog, tenant))

    def _tools_of(self, catalog: Catalog, tenant: Tenant) -> int:
        """The workflows `tenant`'s routes serve: registered for it, or shared with it."""
        shared = self.gate.shared_with(tenant)
        return sum(1 for entry in catalog.all() if entry.serves(tenant.tenant_id, shared))

    async def close(self) -> None:
        try:
            for gate in self.storage.values():
                await gate.close()
            if self.data is not None:
                await self.data.close()
        finally:
            await self.leases.close()


@dataclass(eq=False)
class Assembly:
    """The live parts of one serving app (or of one admin operation when `serving` is off)."""

    loop: asyncio.AbstractEventLoop
    state: SqlState
    counters: CounterStore | None
    clock: SystemClock
    authenticator: Authenticator
    identity: IdentityRuntime | None = None
    tenancy: TenancyRuntime | None = None
    prometheus: PrometheusMeter | None = None
    pipeline: Pipeline | None = None
    mcp: McpChannel | None = None
    apps: tuple[Any, ...] = field(default=())
    metrics_app: Any = None
    """The ASGI app of the monitoring backend's metrics port (None: metrics on the API port only)."""
    observer: CallObserver = field(default_factory=NoopCallObserver)
    """Traces and call logs of every call, as the monitoring backend asks (flushed by `close`)."""
    readiness: Readiness | None = None
    """Probes of the backends every `health_check_interval` (when serving)."""
    cluster: ClusterMembership | None = None
    """This node in its cluster (with `enable_clustering`)."""
    cluster_registry: ClusterRegistry | None = None
    compliance: CompliancePolicy = field(default_factory=CompliancePolicy)
    """The compliance mode in force and the audit retention it keeps."""

    @contextlib.asynccontextmanager
    async def channels_running(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as running:
            if self.mcp is not None:
                await running.enter_async_context(self.mcp.running())
            readiness = self.readiness
            if readiness is not None:
                await readiness.probe()  # /ready answers from the first request on
                running.push_async_callback(readiness.close)
                running.push_async_callback(_stop, asyncio.create_task(readiness.keep_fresh()))
            if self.cluster is not None:
                await self.cluster.join()
                running.push_async_callback(self.cluster.leave)
                # Stopped (awaited) before leaving, so no heartbeat lands after the withdrawal.
                running.push_async_callback(_stop, asyncio.create_task(self.cluster.keep_alive()))
            if self.identity is not None:
                # Keys rotated by another process or node are picked up within this interval.
                refresher = asyncio.create_task(self.identity.keys.keep_fresh(KEY_REFRESH_S))
                running.callback(refresher.cancel)
            retention = self.audit_retention()
            if retention is not None:
                # Now, then hourly; every node may run it (purges take turns in the database).
                running.push_async_callback(_stop, asyncio.create_task(retention.keep_purging()))
            yield

    def audit_retention(self) -> AuditRetention | None:
        """What purges expired audit records; None when they are kept forever."""
        days = self.compliance.retention_days
        return None if days is None else AuditRetention(self.state.audit, self.clock, days)

    async def purge_audit(self) -> int:
        """Delete the audit records older than the retention now; how many went."""
        retention = self.audit_retention()
        return 0 if retention is None else await retention.purge()

    @property
    def meter(self) -> Meter:
        return self.prometheus if self.prometheus is not None else NoopMeter()

    async def is_ready(self) -> bool:
        """Every backend this app needs answered its last probe (probed again once that is older
        than `health_check_interval`)."""
        return self.readiness is not None and await self.readiness.is_ready()

    async def close(self) -> None:
        try:
            await self.observer.close()  # the calls' spans and log lines, flushed before the rest goes
            if self.pipeline is not None:
                # Node pools (SQL engines, HTTP clients) belong to this loop, which is ending.
                await release_loop_resources(entry.workflow for entry in self.pipeline.catalog.all())
            if self.tenancy is not None:
                await self.tenancy.close()
            if self.identity is not None:
                for close in self.identity.closers:
                    await close()
            if self.counters is not None:
                await self.counters.close()
            if self.readiness is not None:
                await self.readiness.close()
            if self.cluster_registry is not None:
                await self.cluster_registry.close()
        finally:
            await self.state.close()

    async def create_api_key(
        self, name: str, *, roles: Iterable[str] = (), tenants: Iterable[str] = ()
    ) -> IssuedKey:
        """A new key, accepted on the routes of `tenants` (checked ids; none: the platform's)."""
        issued = new_api_key(name, roles, self.clock, tenants)
        await self.state.keys.add(issued.key)
        return issued

    async def list_api_keys(self) -> list[ApiKey]:
        return list(await self.state.keys.list())

    async def revoke_api_key(self, key_id: str) -> bool:
        revoked = await self.state.keys.revoke(key_id, self.clock.now())
        self.forget_keys(key_id)
        return revoked

    def forget_keys(self, key_id: str | None = None) -> None:
        if isinstance(self.authenticator, ApiKeyAuthenticator | CredentialAuthenticator):
            self.authenticator.forget(key_id)

    async def rotate_signing_key(self, algorithm: str) -> str:
        if self.identity is None:
            raise ConfigurationError("Token signing keys need enable_auth=True.")
        rotated: SigningKey = await self.identity.keys.rotate(algorithm)
        return rotated.kid

    def require_tenancy(self) -> TenancyRuntime:
        if self.tenancy is None:
            raise ConfigurationError(
                "Tenants need a tenant manager: set app.tenancy.manager, or build the app with "
                "create_production_nexus(tenant_manager=...)."
            )
        return self.tenancy

    async def refresh_tenants(self) -> None:
        if self.tenancy is not None:
            await self.tenancy.directory.reload()

    def check_tools_now(self, catalog: Catalog) -> None:
        if self.tenancy is not None:
            self.tenancy.check_tools(catalog)

    def require_identity(self) -> IdentityService:
        if self.identity is None:
            raise ConfigurationError("Users and logins need enable_auth=True.")
        return self.identity.service


async def assemble(
    options: Options,
    settings: Settings,
    catalog: Catalog,
    *,
    serving: bool = True,
    authz: Authz | None = None,
    cluster_member: bool = True,
) -> Assembly:
    """Open the backends and, when serving, build the pipeline and both channel apps.

    `cluster_member=False` (MCP over stdio: one local client, no port of its own) serves without
    announcing a node in the cluster."""
    if serving:
        check_clustering(options, settings.api)
    compliance = compliance_in_force(options, settings.auth)
    clock = SystemClock()
    state = await open_state(options.state_url, audit_max_batch=settings.monitoring.audit_max_batch)
    assembly = Assembly(asyncio.get_running_loop(), state, None, clock, AnonymousAuthenticator())
    assembly.compliance = compliance
    try:
        counters = None
        if options.rate_limit is not None or options.enable_auth:
            # One counter store (memory, or one Redis pool) for the rate limit and login throttling.
            from nexus.backends.counters import open_counter_store

            counters = assembly.counters = open_counter_store(options.redis_url)
        if serving and options.enable_monitoring:
            assembly.prometheus = PrometheusMeter()
        manager = manager_in_use(options.enable_auth, settings.tenancy, settings.auth)
        seats: SessionSeats | None = None
        admission: Callable[[str], None] | None = None
        if manager is not None and counters is not None:
            tenancy = assembly.tenancy = _open_tenancy(
                options, settings, manager, state, clock, counters, assembly.meter
            )
            seats = CliSessionSeats(tenancy.gate.quotas, tenancy.gate.tenant, clock)
            admission = tenancy.gate.admit_session
        if options.enable_auth and counters is not None:
            identity = assembly.identity = await _open_identity(
                options, settings, state, clock, counters, seats, admission
            )
            keys = None
            if identity.api_keys_enabled:
                keys = ApiKeyAuthenticator(state.keys, clock, cache_ttl_s=settings.auth.api_key_cache_seconds)
            assembly.authenticator = CredentialAuthenticator(api_keys=keys, identity=identity.service)
        if serving:
            await _build_serving_parts(
                assembly, options, settings, catalog, authz or Authz(), cluster_member=cluster_member
            )
    except BaseException:
        await assembly.close()
        raise
    return assembly


def mfa_in_force(auth: AuthSettings) -> MultiFactorAuth | None:
    """The second-factor settings logins answer to: `app.auth.mfa`, or TOTP on every channel when
    the provider says enable_mfa=True and sets none; None without MFA."""
    provider = auth.provider
    if provider is not None and not provider.enable_mfa and auth.mfa is not None:
        raise ConfigurationError("app.auth.mfa is set but the provider says enable_mfa=False; pick one.")
    if auth.mfa is None and provider is not None and provider.enable_mfa:
        from nexus.enterprise.auth import MultiFactorAuth

        return MultiFactorAuth()
    mfa: MultiFactorAuth | None = auth.mfa
    return mfa


def compliance_in_force(options: Options, auth: AuthSettings) -> CompliancePolicy:
    """The compliance policy `app.auth` asks for, checked against the other settings.

    Raises:
        ConfigurationError: the mode or retention is wrong, or a setting the mode forbids is set.
    """
    policy = compliance_policy(auth.compliance_mode, auth.audit_log_retention)
    mfa = mfa_in_force(auth) if options.enable_auth else None
    check_requirements(
        policy, enable_auth=options.enable_auth, mfa=mfa.policy() if mfa is not None else MfaPolicy()
    )
    if policy.frameworks and _erased_at_restart(options.state_url):
        raise ConfigurationError(
            f"app.auth.compliance_mode {auth.compliance_mode!r} keeps the audit trail "
            f"{policy.retention_days} days, but state_url names an in-memory database that the next "
            "stop erases: give a SQLite file or a PostgreSQL state_url."
        )
    return policy


def _erased_at_restart(state_url: str) -> bool:
    """Whether `state_url` is an in-memory SQLite database (gone when the process stops)."""
    from sqlalchemy.engine import make_url

    url = make_url(state_url)
    if not url.drivername.startswith("sqlite"):
        return False
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def api_base_url(options: Options) -> str:
    """The API port's URL as this app serves it (behind a proxy, the proxy's own URL differs)."""
    host = f"[{options.host}]" if ":" in options.host else options.host
    return f"http://{host}:{options.api_port}"


async def _open_identity(
    options: Options,
    settings: Settings,
    state: SqlState,
    clock: SystemClock,
    counters: CounterStore,
    seats: SessionSeats | None = None,
    tenant_admission: Callable[[str], None] | None = None,
) -> IdentityRuntime:
    """Sessions, second factors, SSO and token keys, from `app.auth` (and Redis when configured)."""
    from nexus.backends.auth.passwords import Argon2Hasher
    from nexus.backends.auth.totp import TotpVerifier
    from nexus.backends.ephemeral import MemoryEphemeralStore

    auth = settings.auth
    provider = auth.provider
    closers: list[Callable[[], Awaitable[None]]] = []
    sessions: SessionStore = state.sessions
    ephemeral: EphemeralStore
    sso_state: EphemeralStore
    if options.redis_url is not None:
        from nexus.backends.redis_ephemeral import RedisEphemeralStore
        from nexus.backends.redis_sessions import RedisSessionStore

        redis_sessions = RedisSessionStore(options.redis_url)
        sessions = redis_sessions
        closers.append(redis_sessions.close)
        ephemeral = sso_state = RedisEphemeralStore(options.redis_url)
    else:
        ephemeral = MemoryEphemeralStore()
        # Anyone may start a sign-on: its pending state gets a store of its own, so a flood of
        # starts fills that one and never the locks, trust marks and challenges of logins.
        sso_state = MemoryEphemeralStore(max_entries=20_000)
        closers.append(sso_state.close)
    closers.append(ephemeral.close)
    # Login throttling counts failures apart from the request rate limit, always.
    mfa_config = mfa_in_force(auth)
    mfa = mfa_config.policy() if mfa_config is not None else MfaPolicy()
    parts = await provider.open(sso_state, api_base_url(options)) if provider is not None else None
    if parts is not None and parts.directory is not None:
        closers.append(parts.directory.close)
    hardware = None
    if mfa_config is not None and FactorKind.HARDWARE_KEY in mfa.methods:
        from nexus.backends.auth.webauthn import WebAuthnSettings, WebAuthnVerifier

        # Without a configured relying party, keys register with this server as reached on
        # loopback ("localhost": WebAuthn allows no IP addresses as relying party ids).
        rp_id = mfa_config.rp_id or "localhost"
        origin = mfa_config.origin or f"http://localhost:{options.api_port}"
        hardware = WebAuthnVerifier(
            WebAuthnSettings(rp_id=rp_id, rp_name=mfa_config.rp_name, origins=(origin,))
        )
    sms = None
    if FactorKind.SMS in mfa.methods:
        from nexus.backends.auth.sms import MessageSink

        sms = (
            mfa_config.sms_sender
            if mfa_config is not None and mfa_config.sms_sender is not None
            else MessageSink()
        )
    keys = SigningKeys(
        state.signing_keys,
        clock,
        key_file=auth.signing_key_file,
        verify_retired_for=timedelta(seconds=auth.access_token_duration),
        leeway=timedelta(seconds=auth.token_leeway_seconds),
    )
    codec = await keys.open()
    identity_parts = IdentityParts(
        seats=seats,
        tenant_admission=tenant_admission,
        users=state.users,
        factors=state.factors,
        sessions=sessions,
        ephemeral=ephemeral,
        hasher=Argon2Hasher(time_cost=auth.password_time_cost, memory_kib=auth.password_memory_kib),
        tokens=codec,
        throttle=LoginThrottle(
            counters,
            ephemeral,
            clock,
            ThrottlePolicy(
                per_account=auth.login_failures_per_account, per_address=auth.login_failures_per_address
            ),
        ),
        directory=parts.directory if parts is not None else None,
        sso=parts.sso if parts is not None else {},
        otp=TotpVerifier(),
        hardware=hardware,
        sms=sms,
    )
    policy = SessionPolicy(
        issuer=auth.token_issuer,
        session_duration_s=float(auth.session_duration),
        access_token_s=float(auth.access_token_duration),
        cross_channel_sso=auth.cross_channel_sso,
        require_reauth_for=frozenset(auth.require_reauth_for),
        reauth_max_age_s=float(auth.reauth_max_age),
        cache_s=float(auth.session_cache_seconds),
    )
    service = IdentityService(identity_parts, clock, mfa=mfa, sessions=policy)
    return IdentityRuntime(
        service=service,
        closers=tuple(reversed(closers)),
        keys=keys,
        api_keys_enabled=provider is None or provider.enable_api_keys,
    )


def _open_tenancy(
    options: Options,
    settings: Settings,
    manager: TenantManager,
    state: SqlState,
    clock: SystemClock,
    counters: CounterStore,
    meter: Meter,
) -> TenancyRuntime:
    """The registry (in the state store), leases (memory, or Redis in a cluster) and the gate."""
    tenancy = settings.tenancy
    if manager.isolation_level is IsolationLevel.STRICT:
        data_url = manager.data_url or options.state_url
        if not data_url.startswith(("postgresql", "postgres")):
            raise ConfigurationError(
                "Strict isolation keeps each tenant's data in its own PostgreSQL schema: set state_url "
                "(or the TenantManager's data_url) to a postgresql:// URL, or choose moderate or basic."
            )
    rules = RoutingRules.from_mapping(
        tenancy.routing, base_domain=tenancy.base_domain, trusted_proxies=tenancy.trusted_proxies
    )
    if rules.api == "subdomain" and rules.base_domain is None:
        raise ConfigurationError(
            "API tenant routing by subdomain needs app.tenancy.base_domain or NEXUS_BASE_DOMAIN (for "
            "example 'api.company.com', so client001.api.company.com is client001's)."
        )
    leases: LeaseGauge
    if options.redis_url is not None:
        from nexus.backends.redis_lease_gauge import RedisLeaseGauge

        leases = RedisLeaseGauge(options.redis_url)
    else:
        leases = MemoryLeaseGauge(clock)
    directory = TenantDirectory(state.tenants, rules, clock, refresh_s=float(tenancy.refresh_seconds))
    quotas = TenantQuotas(manager.quota_book(), counters, leases, meter=meter)
    data: TenantDataStore | None = None
    data_url = manager.data_url or options.state_url
    if data_url.startswith(("postgresql", "postgres")):
        from nexus.backends.tenant_data import PostgresTenantData

        data = PostgresTenantData(
            data_url,
            manager.isolation_level,
            storage="database" if manager.storage == "database" else "schema",
            database_name=manager.database_name,
        )
    runtime: TenancyRuntime | None = None

    def contexts(tenant: Tenant) -> Mapping[str, Any]:
        assert runtime is not None  # noqa: S101  # set below, before any call can come
        return runtime.context(tenant)

    gate = TenantGate(directory, quotas, manager.policy, contexts)
    # Deleted tenants (here or on another node) leave the usage metrics when the index drops them.
    directory.on_removed = quotas.forget_all
    # Port 0 asks the OS for one: when serving, `options` holds the ports actually bound.
    own_ports = frozenset(port for port in (options.api_port, options.mcp_port) if port)
    runtime = TenancyRuntime(
        manager,
        directory,
        gate,
        leases,
        clock,
        own_ports,
        data,
        storage_refresh_s=float(tenancy.storage_refresh_seconds),
    )
    return runtime


async def _open_health(assembly: Assembly, options: Options, settings: Settings, *, member: bool) -> None:
    """Readiness probes of every backend this node needs, and with clustering its membership."""
    probes: dict[str, Probe] = {"state": assembly.state.ping}
    if assembly.counters is not None:
        probes["redis"] = assembly.counters.ping
    registry: ClusterRegistry | None = None
    if member and settings.api.enable_clustering and options.redis_url is not None:
        from sqlalchemy.engine import make_url

        from nexus.backends.redis_cluster import RedisClusterRegistry

        # One cluster = the nodes sharing this Redis and this state database (by its name, which
        # every node agrees on whatever host name it reaches the server by).
        name = make_url(options.state_url).database or "nexus"
        registry = assembly.cluster_registry = RedisClusterRegistry(options.redis_url, cluster=name)
        await registry.ping()  # a registry that does not answer is a start-up error
        probes.setdefault("redis", registry.ping)
    interval = float(settings.api.health_check_interval)
    readiness = assembly.readiness = Readiness(probes, assembly.clock, interval_s=interval)
    if registry is not None:
        node = ClusterNode(
            node_id=new_node_id(socket.gethostname(), os.getpid()),
            api=_advertised(options.host, options.api_port),
            mcp=_advertised(options.host, options.mcp_port),
            version=VERSION,
            started_at=assembly.clock.now(),
            ready=False,
        )
        assembly.cluster = ClusterMembership(registry, node, readiness)


def _advertised(host: str, port: int) -> str:
    """`host:port` as other nodes and operators reach it (a wildcard host: this machine's name)."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104  # compared with, never bound here
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait until it has stopped."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def build_authorizer(authz: Authz, clock: Clock) -> Authorizer:
    """Allow-all until roles or policies are set; otherwise the one decision point of core."""
    if authz.rbac is None and authz.abac is None:
        return AllowAll()
    from nexus.core.policy.decision import PolicyAuthorizer

    abac = authz.abac
    return PolicyAuthorizer(
        authz.rbac.book if authz.rbac is not None else None,
        abac.policies if abac is not None else None,
        abac if abac is not None else clock,  # the engine's now(): its own clock when it has one
        abac.zone if abac is not None else UTC,
    )


async def _build_serving_parts(
    assembly: Assembly,
    options: Options,
    settings: Settings,
    catalog: Catalog,
    authz: Authz,
    *,
    cluster_member: bool = True,
) -> None:
    if assembly.tenancy is not None:
        await assembly.tenancy.directory.reload()
        assembly.tenancy.check_tools(catalog)  # the MCP tools each tenant would be shown
    limiter: Limiter = NoLimit()
    counters = assembly.counters  # opened by assemble() whenever there is a rate limit or auth
    if counters is not None:
        await counters.ping()  # a configured Redis that does not answer is a start-up error
    if options.rate_limit is not None and counters is not None:
        limiter = RateLimiter(counters, options.rate_limit)
    await _open_health(assembly, options, settings, member=cluster_member)
    prometheus, meter = assembly.prometheus, assembly.meter
    monitoring = monitoring_in_use(options, settings.monitoring)
    # GDPR's data minimisation: operational telemetry (shipped to collectors and log stores) names
    # no person; the audit trail, kept under the compliance retention, still does.
    pseudonymize = assembly.compliance.includes(Framework.GDPR)
    observer = assembly.observer = open_call_observer(monitoring, pseudonymize=pseudonymize)
    pipeline = Pipeline(
        catalog=catalog,
        authenticator=assembly.authenticator,
        authorizer=build_authorizer(authz, assembly.clock),
        limiter=limiter,
        auditor=Auditor(assembly.state.audit, assembly.clock),
        meter=meter,
        clock=assembly.clock,
        runtime=AsyncLocalRuntime(node_timeout_s=settings.api.node_timeout_seconds),
        encode=codec.dumps,
        step_up=StepUp(assembly.identity.service.policy, assembly.clock) if assembly.identity else None,
        tenancy=assembly.tenancy.gate if assembly.tenancy is not None else None,
        observer=observer,
    )
    http_options = HttpOptions(
        max_body_bytes=settings.api.max_body_bytes,
        docs_enabled=settings.api.docs_enabled,
        metrics_path=settings.monitoring.metrics_path,
        render_metrics=prometheus.render if prometheus is not None else None,
        is_ready=assembly.is_ready,
        auth_enabled=options.enable_auth,
        title=options.title,
        version=VERSION,
        cluster=assembly.cluster.view if assembly.cluster is not None else None,
    )
    from nexus.core.policy.explain import Explainer

    explainer = Explainer(
        catalog,
        lambda: pipeline.authorizer,  # the one in force: set_rbac_manager may replace it while serving
        assembly.clock,
        keys=assembly.state.keys,
        users=assembly.state.users if assembly.identity is not None else None,
    )
    extra = cli_routes(pipeline, http_options, explainer=explainer)
    identity = assembly.identity
    if identity is not None:
        hosts = frozenset(settings.auth.sso_return_hosts)
        for channel, prefix in ((Channel.API, ""), (Channel.CLI, CLI_PREFIX)):
            routes = AuthRoutes(
                pipeline, identity.service, channel, jwks=identity.keys.jwks, return_hosts=hosts
            )
            extra += routes.routes(prefix)
    tenancy = assembly.tenancy
    if tenancy is not None:
        from nexus.channels.tenants import TenantRoutes

        for channel, prefix in ((Channel.API, ""), (Channel.CLI, CLI_PREFIX)):
            extra += TenantRoutes(pipeline, channel, http_options, tenancy).routes(prefix)
    api_app = build_http_app(pipeline, http_options, extra_routes=extra, explainer=explainer)
    if monitoring is not None and monitoring.metrics_port is not None:
        assembly.metrics_app = build_metrics_app(pipeline, http_options)
    mcp = McpChannel(
        pipeline,
        settings.mcp,
        auth_enabled=options.enable_auth,
        version=VERSION,
        host=options.host,
        is_ready=assembly.is_ready,
        tenant_routes=assembly.tenancy is not None,
        cluster=http_options.cluster,
    )
    mcp.authorization_servers = (api_base_url(options),)
    assembly.pipeline, assembly.mcp, assembly.apps = pipeline, mcp, (api_app, mcp.asgi_app)
