"""Typed settings sections behind `app.auth`, `app.monitoring`, `app.api` and `app.mcp`.

The source document's attribute style writes into these before `start()`; an unknown name raises
`AttributeError` naming the valid ones, values are validated once at `start()`, then frozen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from nexus.errors import ConfigurationError


class Section:
    """Base of the attribute sections: closed set of names, frozen while serving."""

    section: ClassVar[str] = ""

    def __setattr__(self, name: str, value: Any) -> None:
        names = [f.name for f in fields(self)]  # type: ignore[arg-type]  # every subclass is a dataclass
        if name not in names:
            raise AttributeError(f"app.{self.section} has no setting {name!r}; valid: {', '.join(names)}.")
        if self.__dict__.get("_frozen", False):
            raise ConfigurationError(f"app.{self.section}.{name} cannot change while the app is serving.")
        object.__setattr__(self, name, value)

    def freeze(self) -> None:
        self.validate()
        object.__setattr__(self, "_frozen", True)

    def thaw(self) -> None:
        object.__setattr__(self, "_frozen", False)

    def validate(self) -> None:
        """Raise `ConfigurationError` for a value that cannot be honoured."""

    def _require(self, ok: bool, name: str, expected: str) -> None:
        if not ok:
            value = getattr(self, name)
            raise ConfigurationError(f"app.{self.section}.{name} must be {expected}, got {value!r}.")


MIN_HEALTH_CHECK_INTERVAL = 0.2
"""Shortest `app.api.health_check_interval`: probes and heartbeats more often would only load the backends."""


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@dataclass(eq=False)
class AuthSettings(Section):
    """Identity settings (the source document's `app.auth.*`)."""

    section: ClassVar[str] = "auth"
    provider: Any = None
    """An `EnterpriseAuthProvider`: LDAP, SSO, API keys and MFA switches. None: local users and API keys."""
    mfa: Any = None
    """A `MultiFactorAuth`: which second factors count, on which channels, for whom."""
    session_duration: float = 28800
    """Seconds a login session lasts; every channel token derived from it ends with it."""
    cross_channel_sso: bool = True
    """A session opened on one channel yields tokens for the others (each with its own audience)."""
    require_reauth_for: list[str] = field(default_factory=list)
    """Roles and workflow tags whose calls need an authentication younger than `reauth_max_age`."""
    reauth_max_age: float = 900
    """Seconds a login (with its second factor) counts as recent for `require_reauth_for`."""
    access_token_duration: float = 900
    """Seconds a channel access token lives (never past its session)."""
    token_issuer: str = "nexus"  # noqa: S105  # a name, not a secret
    """The `iss` of the tokens this app signs and accepts."""
    signing_key_file: str | None = None
    """A PEM Ed25519 or P-256 private key to sign tokens with; without it a key is generated on
    first start and kept in the state store (rotate with `nexus keys rotate-signing`)."""
    token_leeway_seconds: float = 5.0
    """Clock skew forgiven between nodes when checking a token's `exp` and `nbf`."""
    session_cache_seconds: float = 5.0
    """How long a checked session is trusted before the store is asked again (bounds how long a
    logout in another process takes to reach this one; in this process it is immediate)."""
    api_key_cache_seconds: float = 5.0
    """How long a verified API key is trusted before the store is asked again (bounds revocation lag
    across processes; revocation in this process is immediate). 0 disables the cache."""
    login_failures_per_account: int = 20
    """Failed logins per account in 15 minutes before it locks for 15 minutes (addresses the user
    logged in from before stay open)."""
    login_failures_per_address: int = 100
    """Failed logins per client address in 15 minutes before that address locks for 15 minutes."""
    password_time_cost: int = 2
    """Argon2id passes per password hash; a change rehashes each password at its next login."""
    password_memory_kib: int = 19456
    """Argon2id memory per password hash in KiB (OWASP: 19 MiB with 2 passes)."""
    sso_return_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1", "localhost", "::1"])
    """Hosts an SSO login may send the browser back to (besides this server's own paths)."""
    multi_tenant: bool | None = None
    """The source document's switch: True serves tenants (with `app.tenancy.manager`, or a
    `TenantManager(isolation_level=tenant_isolation)` when none is set); False refuses a manager."""
    tenant_isolation: str | None = None
    """The source document's "strict", "moderate" or "basic"; must agree with the manager's."""
    compliance_mode: str | None = None
    """"gdpr", "hipaa", "sox" or "enterprise" (all three): refuses settings they forbid (auth
    off; under HIPAA a second factor not required on every channel) and keeps audit records at
    least the mode's floor (README, "Compliance"). None: no framework."""
    audit_log_retention: int | None = None
    """Days audit records are kept, then purged (hourly while serving; `nexus audit purge`).
    None: forever, unless `compliance_mode` sets its floor (SOX 2557, HIPAA 2192 days)."""

    def validate(self) -> None:
        for name in ("api_key_cache_seconds", "session_cache_seconds", "token_leeway_seconds"):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            self._require(ok, name, "a number of seconds >= 0")
        for name in ("session_duration", "reauth_max_age", "access_token_duration"):
            self._require(_positive_number(getattr(self, name)), name, "a positive number of seconds")
        self._require(
            self.access_token_duration <= self.session_duration,
            "access_token_duration",
            "at most session_duration",
        )
        self._require(isinstance(self.cross_channel_sso, bool), "cross_channel_sso", "True or False")
        names = self.require_reauth_for
        ok = isinstance(names, list | tuple | set | frozenset) and all(
            isinstance(n, str) and n for n in names
        )
        self._require(ok, "require_reauth_for", "a list of role or tag names")
        hosts = self.sso_return_hosts
        ok = isinstance(hosts, list | tuple) and all(isinstance(h, str) and h for h in hosts)
        self._require(ok, "sso_return_hosts", "a list of host names")
        self._require(
            isinstance(self.token_issuer, str) and bool(self.token_issuer), "token_issuer", "a string"
        )
        for name in ("login_failures_per_account", "login_failures_per_address", "password_time_cost"):
            value = getattr(self, name)
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            self._require(ok, name, "a positive integer")
        memory = self.password_memory_kib
        ok = isinstance(memory, int) and not isinstance(memory, bool) and memory >= 64
        self._require(ok, "password_memory_kib", "an integer >= 64")
        self._require(self.multi_tenant in (None, True, False), "multi_tenant", "True, False or None")
        self._require(
            self.tenant_isolation in (None, "strict", "moderate", "basic"),
            "tenant_isolation",
            "'strict', 'moderate' or 'basic'",
        )
        self._validate_compliance()
        for name, kind in (("provider", "EnterpriseAuthProvider"), ("mfa", "MultiFactorAuth")):
            value = getattr(self, name)
            check = getattr(value, "validate", None)
            self._require(value is None or callable(check), name, f"a {kind} or None")
            if value is not None and check is not None:
                check()

    def _validate_compliance(self) -> None:
        """Their values here; what a mode requires of the rest is checked at start
        (`nexus.core.compliance`)."""
        self._require(
            self.compliance_mode in (None, "gdpr", "hipaa", "sox", "enterprise"),
            "compliance_mode",
            "'gdpr', 'hipaa', 'sox', 'enterprise' or None",
        )
        days = self.audit_log_retention
        ok = days is None or (isinstance(days, int) and not isinstance(days, bool) and days >= 1)
        self._require(ok, "audit_log_retention", "a positive whole number of days (2557 is 7 years) or None")


@dataclass(eq=False)
class MonitoringSettings(Section):
    """Metrics and audit settings."""

    section: ClassVar[str] = "monitoring"
    metrics_path: str = "/metrics"
    """Where the Prometheus text exposition is served on the API port."""
    audit_max_batch: int = 512
    """Most audit records one group commit writes in a single transaction."""
    backend: Any = None
    """A `nexus.enterprise.monitoring.PrometheusMonitoring`: a metrics port of its own, OpenTelemetry
    traces and JSON call logs (needs enable_monitoring=True). None: metrics on the API port only."""

    def validate(self) -> None:
        path = self.metrics_path
        self._require(
            isinstance(path, str) and path.startswith("/"), "metrics_path", "a path starting with '/'"
        )
        batch = self.audit_max_batch
        ok = isinstance(batch, int) and not isinstance(batch, bool) and 1 <= batch <= 10_000
        self._require(ok, "audit_max_batch", "an integer from 1 to 10000")
        backend = self.backend
        check = getattr(backend, "validate", None)
        self._require(backend is None or callable(check), "backend", "a PrometheusMonitoring or None")
        if backend is not None and check is not None:
            check()


@dataclass(eq=False)
class ApiSettings(Section):
    """REST channel settings."""

    section: ClassVar[str] = "api"
    max_body_bytes: int = 1_048_576
    """Largest request body accepted; bigger bodies answer 413 before parsing."""
    docs_enabled: bool = True
    """Serve OpenAPI at /openapi.json and the docs UI at /docs."""
    node_timeout_seconds: float = 30.0
    """Default time limit for each node of a workflow run (a node's own `timeout` config wins)."""
    enable_clustering: bool = False
    """Run as one node of a cluster: announce this node in Redis and list the live nodes in the
    health detail. Needs shared state (a postgresql:// state_url and a redis_url)."""
    health_check_interval: float = 30
    """Seconds between backend probes (/ready answers from the last one) and cluster heartbeats;
    a node missing three heartbeats drops out of the cluster."""

    def validate(self) -> None:
        size = self.max_body_bytes
        ok = isinstance(size, int) and not isinstance(size, bool) and size > 0
        self._require(ok, "max_body_bytes", "a positive integer")
        self._require(isinstance(self.docs_enabled, bool), "docs_enabled", "True or False")
        self._require(
            _positive_number(self.node_timeout_seconds), "node_timeout_seconds", "a positive number"
        )
        self._require(isinstance(self.enable_clustering, bool), "enable_clustering", "True or False")
        interval = self.health_check_interval
        # Bounded above too, so infinity (a heartbeat that never comes) is refused.
        ok = _positive_number(interval) and MIN_HEALTH_CHECK_INTERVAL <= interval <= 86400
        self._require(
            ok, "health_check_interval", f"a number of seconds from {MIN_HEALTH_CHECK_INTERVAL} to 86400"
        )


@dataclass(eq=False)
class McpSettings(Section):
    """MCP channel settings."""

    section: ClassVar[str] = "mcp"
    path: str = "/mcp"
    """Path of the streamable HTTP endpoint on mcp_port."""
    server_name: str = "nexus"
    """Name the server reports in the MCP initialize handshake."""

    def validate(self) -> None:
        path = self.path
        ok = isinstance(path, str) and path.startswith("/") and len(path) > 1 and not path.endswith("/")
        self._require(ok, "path", "a path like '/mcp'")
        name = self.server_name
        self._require(isinstance(name, str) and bool(name), "server_name", "a non-empty string")


@dataclass(eq=False)
class TenancySettings(Section):
    """Tenants: who manages them and how each channel's requests name theirs (README, "Tenancy")."""

    section: ClassVar[str] = "tenancy"
    manager: Any = None
    """A `nexus.enterprise.tenancy.TenantManager`: isolation level, quotas, cross-tenant policies."""
    routing: dict[str, str] = field(
        default_factory=lambda: {"api": "subdomain", "cli": "prefix", "mcp": "port_offset"}
    )
    """The document's `tenant_routing`. MCP "port_offset" serves each tenant's `mcp_port` and
    `/t/{tenant}/mcp` on the MCP port; "path" serves only the latter."""
    base_domain: str | None = None
    """The API's domain: client001.<base_domain> is the tenant with api_subdomain "client001";
    any other host is the platform's own route. Required for subdomain routing."""
    trusted_proxies: list[str] = field(default_factory=list)
    """Addresses or networks (CIDR) whose X-Forwarded-Host names the host; nobody else's counts."""
    refresh_seconds: float = 5.0
    """How soon tenants created, suspended or deleted on another node take effect on this one."""
    storage_refresh_seconds: float = 30.0
    """How often a tenant's data is measured for its `storage_mb` quota (at most; on writes)."""

    def validate(self) -> None:
        routing = self.routing
        self._require(isinstance(routing, dict), "routing", "a dict like {'api': 'subdomain'}")
        proxies = self.trusted_proxies
        ok = isinstance(proxies, list | tuple) and all(isinstance(p, str) for p in proxies)
        self._require(ok, "trusted_proxies", "a list of addresses or networks")
        self._require(_positive_number(self.refresh_seconds), "refresh_seconds", "a positive number")
        self._require(
            _positive_number(self.storage_refresh_seconds), "storage_refresh_seconds", "a positive number"
        )
        domain = self.base_domain
        self._require(domain is None or isinstance(domain, str), "base_domain", "a DNS name or None")


@dataclass(eq=False)
class Settings:
    """All sections together; the app owns one."""

    auth: AuthSettings = field(default_factory=AuthSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    mcp: McpSettings = field(default_factory=McpSettings)
    tenancy: TenancySettings = field(default_factory=TenancySettings)

    def sections(self) -> tuple[Section, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass(frozen=True, slots=True)
class Options:
    """The `Nexus(...)` constructor arguments."""

    api_port: int
    mcp_port: int
    host: str
    enable_auth: bool
    enable_monitoring: bool
    rate_limit: int | None
    state_url: str
    redis_url: str | None
    title: str


def check_auth_in_use(options: Options, auth: AuthSettings) -> None:
    """With `enable_auth=False`, an identity setting changed from its default would do nothing:
    refuse it rather than ignore it."""
    if options.enable_auth:
        return
    if auth.compliance_mode is not None:
        raise ConfigurationError(
            f"app.auth.compliance_mode {auth.compliance_mode!r} needs enable_auth=True: every audit "
            "record must name an authenticated principal. Pass enable_auth=True to Nexus(...), or "
            "leave compliance_mode unset."
        )
    defaults = AuthSettings()
    # The audit trail's retention applies whether callers are identified or not.
    changed = [
        f.name
        for f in fields(auth)
        if f.name != "audit_log_retention" and getattr(auth, f.name) != getattr(defaults, f.name)
    ]
    if changed:
        raise ConfigurationError(
            f"app.auth.{changed[0]} is set but enable_auth=False, so nothing would use it: "
            "pass enable_auth=True to Nexus(...), or leave it unset."
        )


@dataclass(eq=False)
class Authz:
    """What `app.set_rbac_manager` and `app.set_abac_engine` were given (None: not set)."""

    rbac: Any = None
    """An `nexus.enterprise.auth.RBACManager`."""
    abac: Any = None
    """An `nexus.enterprise.auth.ABACPolicyEngine`."""


def check_authz(options: Options, authz: Authz) -> None:
    """Roles need identities: with auth off every caller is anonymous and would hold no role."""
    if authz.rbac is not None and not options.enable_auth:
        raise ConfigurationError(
            "set_rbac_manager needs enable_auth=True: without it every caller is anonymous, holds no "
            "role, and would be refused everything. Pass enable_auth=True to Nexus(...)."
        )


def check_clustering(options: Options, api: ApiSettings) -> None:
    """`enable_clustering` needs state every node shares: nodes on SQLite files or in-memory
    sessions and counters would silently diverge."""
    if api.enable_clustering is not True:
        return
    missing = []
    if not options.state_url.startswith(("postgresql", "postgres")):
        scheme = options.state_url.split(":", 1)[0]
        missing.append(f"state_url must be a postgresql:// URL every node shares (it is {scheme}:)")
    if options.redis_url is None:
        missing.append("redis_url must name the Redis every node shares (it is not set)")
    if missing:
        raise ConfigurationError(
            f"app.api.enable_clustering=True needs shared state: {'; '.join(missing)}. Pass them to "
            "Nexus(...) or set NEXUS_STATE_URL / NEXUS_REDIS_URL, or leave clustering off."
        )


def check_options(options: Options) -> None:
    for name in ("api_port", "mcp_port"):
        port = getattr(options, name)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigurationError(f"{name} must be a port number from 0 to 65535, got {port!r}.")
    if options.api_port == options.mcp_port and options.api_port != 0:
        raise ConfigurationError("api_port and mcp_port must differ.")
    limit = options.rate_limit
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigurationError(
            f"rate_limit must be a positive number of requests per minute, got {limit!r}."
        )
    if not isinstance(options.state_url, str) or "://" not in options.state_url:
        raise ConfigurationError(
            "state_url must be a URL such as sqlite:///./nexus.db or postgresql://host/db."
        )
    redis_url = options.redis_url
    if redis_url is not None and (
        not isinstance(redis_url, str) or not redis_url.startswith(("redis://", "rediss://"))
    ):
        raise ConfigurationError("redis_url must start with redis:// or rediss://.")
    if redis_url is not None and limit is None and not options.enable_auth:
        # Redis holds the shared rate-limit counters and the login sessions; accepted with
        # nothing to hold it would do nothing.
        raise ConfigurationError(
            "redis_url (given, or from NEXUS_REDIS_URL) holds the rate-limit counters and login "
            "sessions: set rate_limit or enable_auth too, or drop it."
        )
    _check_flags_and_names(options)


def _check_flags_and_names(options: Options) -> None:
    for name in ("enable_auth", "enable_monitoring"):
        if not isinstance(getattr(options, name), bool):
            raise ConfigurationError(f"{name} must be True or False, got {getattr(options, name)!r}.")
    for name in ("host", "title"):
        if not isinstance(getattr(options, name), str) or not getattr(options, name):
            raise ConfigurationError(f"{name} must be a non-empty string, got {getattr(options, name)!r}.")
