"""The contract of the core: the values that flow through the pipeline.

Every channel builds one `Invocation` per call and gets back a `Result` or a `NexusError`.
Pure data only; this module imports nothing outside the standard library.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Channel(enum.StrEnum):
    """The three ways a workflow is reached."""

    API = "api"
    CLI = "cli"
    MCP = "mcp"


class Action(enum.StrEnum):
    """What a call wants to do with a resource."""

    READ = "read"
    EXECUTE = "execute"
    LOGIN = "login"
    MFA = "mfa"
    TOKEN = "token"  # noqa: S105  # an action name, not a secret
    REAUTH = "reauth"
    LOGOUT = "logout"
    ENROLL = "enroll"


class Outcome(enum.StrEnum):
    """How a call ended; one label value per error class of DESIGN section 6."""

    SUCCESS = "success"
    INVALID_INPUT = "invalid_input"
    NOT_FOUND = "not_found"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Credential:
    """What a caller presented, as the channel found it; `secret` never reaches a log or a response."""

    scheme: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. `kind` is "anonymous", "api_key", or a login method of a later identity provider."""

    id: str
    kind: str
    roles: frozenset[str] = frozenset()
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    session_id: str | None = None
    """The login session behind a session-derived token; None for API keys and anonymous callers."""
    auth_time: datetime | None = None
    """When the caller last proved who they are (step-up compares against it); None when unknown."""
    name: str = ""
    """A name people use: the username of a login, the name of an API key (roles are assigned by it)."""
    tenants: frozenset[str] = frozenset()
    """The tenants this principal belongs to; empty for a platform principal (no tenant's routes)."""
    tenant_id: str | None = None
    """The tenant a session-derived principal logged in to (a session never crosses tenants)."""

    @property
    def is_anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Principal(id="anonymous", kind="anonymous")


class RouteKind(enum.StrEnum):
    """How a call named its tenant: never by its inputs, only by how it arrived."""

    HOST = "host"
    """API: the Host header (a tenant's subdomain under the base domain, or the platform's host)."""
    PREFIX = "prefix"
    """CLI: `nexus --tenant <prefix>`."""
    PORT = "port"
    """MCP: the listener's port (port-offset routing)."""
    PATH = "path"
    """MCP: the tenant id of `/t/{tenant_id}/mcp`."""


@dataclass(frozen=True, slots=True)
class TenantRoute:
    """What a channel saw of a call's route, untranslated; core decides which tenant it names."""

    kind: RouteKind
    value: str
    forwarded_host: str | None = None
    """HOST only: X-Forwarded-Host, believed only from a trusted proxy's address."""


@dataclass(frozen=True, slots=True)
class Invocation:
    """One call from one channel; derive changed copies with `dataclasses.replace`."""

    request_id: str
    channel: Channel
    workflow: str
    inputs: Mapping[str, Any]
    credential: Credential | None = None
    client_addr: str = ""
    principal: Principal = ANONYMOUS
    action: Action | str = Action.EXECUTE
    """An `Action`, or a custom action word of a custom surface (e.g. "explain")."""
    surface: str | None = None
    """None for workflows as tools, commands and endpoints; "resources" for workflows as MCP
    resources; or a surface of its own ("health", "authz"), with `workflow` naming it for the audit."""
    route: TenantRoute | None = None
    """How the call arrived (set by the channel); None when the app serves no tenants."""
    tenant_id: str | None = None
    """The tenant the route named, set by the pipeline only (channels' values are overwritten)."""
    trace_parent: str | None = None
    """The W3C `traceparent` the caller sent, raw and length-bounded by the channel; only the
    tracing backend parses it (a malformed one starts a new trace)."""

    def as_made_by(self, principal: Principal) -> Invocation:
        """This call, made by `principal`: `replace(self, principal=...)` written out, since every
        identified call makes this copy and `replace` costs about three times as much."""
        return Invocation(
            request_id=self.request_id,
            channel=self.channel,
            workflow=self.workflow,
            inputs=self.inputs,
            credential=self.credential,
            client_addr=self.client_addr,
            principal=principal,
            action=self.action,
            surface=self.surface,
            route=self.route,
            tenant_id=self.tenant_id,
            trace_parent=self.trace_parent,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """An authorization verdict with the reason that produced it (audited, explainable)."""

    allowed: bool
    reason: str
    visible: bool = True


@dataclass(frozen=True, slots=True)
class Usage:
    """The state of one rate-limit counter after a hit."""

    allowed: bool
    limit: int
    remaining: int
    reset_after_s: float


@dataclass(frozen=True, slots=True)
class Result:
    """A successful execution, as every channel renders it."""

    run_id: str
    workflow: str
    outputs: Mapping[str, Mapping[str, Any]]
    duration_ms: float


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited call. Input values are never part of it."""

    time: datetime
    request_id: str
    channel: Channel
    principal_id: str
    workflow: str
    action: Action | str
    outcome: Outcome
    error_code: str | None
    duration_ms: float
    client_addr: str = ""
    reason: str = ""
    tenant_id: str | None = None
    """The tenant whose route the call came by; None for the platform's own routes."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key: only the hash of the secret is kept."""

    key_id: str
    name: str
    secret_hash: str = field(repr=False)
    roles: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None = None
    tenants: frozenset[str] = frozenset()
    """The tenants whose routes accept this key; empty: the platform's routes only."""

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """What callers may learn about a registered workflow."""

    name: str
    description: str | None
    tags: tuple[str, ...]
    input_schema: Mapping[str, Any]
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    """Metadata given at registration (e.g. classification_level) that policies read as resource.*;
    never shown to callers."""


@dataclass(frozen=True, slots=True)
class RunTiming:
    """When the workflow run of an execute happened, relative to its call."""

    run_id: str
    offset_s: float
    """Seconds from the call's start to the run's start."""
    duration_s: float


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished pipeline call, as call observers (traces, call logs) see it.

    Observers read ids, names and timings only: never `invocation.inputs` or its credential.
    """

    invocation: Invocation
    workflow: str
    """The workflow as the metrics name it: registered names and placeholders, a bounded set."""
    outcome: Outcome
    error_code: str | None
    started_at: datetime
    """Wall-clock start (UTC)."""
    duration_s: float
    run: RunTiming | None = None
    """The run of an execute that reached the runtime; None otherwise."""
