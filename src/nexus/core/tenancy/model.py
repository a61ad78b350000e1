"""Tenants: who they are, how they are reached, and what they may use.

Pure values, checked when built: a tenant id that could not be a PostgreSQL schema name, a
subdomain that could not be a DNS label or a quota that is not a positive count never gets in.
Imports only the standard library and errors.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from types import MappingProxyType
from typing import Any

from nexus.errors import ConfigurationError

# A tenant id names a PostgreSQL schema, a key prefix and a URL segment at once.
_TENANT_ID = re.compile(r"[a-z][a-z0-9_]{0,47}")
_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PREFIX = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_WORD = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")
# One workflow name is a URL segment, a CLI argument and an MCP tool name at once (the catalog's rule).
WORKFLOW_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_NAME_MAX = 200
_SHARED_SCHEMAS = frozenset({"public", "information_schema", "nexus"})
# Control, format (bidi overrides) and line/paragraph separators: names are shown in terminals and logs.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


class IsolationLevel(enum.StrEnum):
    """How far apart tenants' data are kept (the README says exactly what each means)."""

    STRICT = "strict"
    MODERATE = "moderate"
    BASIC = "basic"


class TenantStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Resource(enum.StrEnum):
    """What a quota counts."""

    API_REQUESTS_PER_HOUR = "api_requests_per_hour"
    CONCURRENT_WORKFLOWS = "concurrent_workflows"
    CLI_SESSIONS = "cli_sessions"
    MCP_TOOLS = "mcp_tools"
    STORAGE_MB = "storage_mb"


@dataclass(frozen=True, slots=True)
class QuotaProfile:
    """A named set of limits; None means no limit on that resource."""

    name: str
    api_requests_per_hour: int | None = None
    concurrent_workflows: int | None = None
    cli_sessions: int | None = None
    mcp_tools: int | None = None
    storage_mb: int | None = None

    def __post_init__(self) -> None:
        check_word(self.name, "a quota profile name")
        for resource in Resource:
            limit = getattr(self, resource.value)
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
                raise ConfigurationError(
                    f"Quota {resource.value} of profile {self.name!r} must be a positive whole number "
                    f"or None (no limit), got {limit!r}."
                )

    def limit(self, resource: Resource) -> int | None:
        value: int | None = getattr(self, resource.value)
        return value

    @classmethod
    def from_mapping(cls, name: str, limits: Mapping[str, Any]) -> QuotaProfile:
        """A profile from `{"api_requests_per_hour": 10000, ...}`, the document's `resource_quotas`."""
        if not isinstance(limits, Mapping):
            raise ConfigurationError(f"Quotas of profile {name!r} must be a dict of resource -> limit.")
        known = {resource.value for resource in Resource}
        unknown = sorted(str(key) for key in limits if key not in known)
        if unknown:
            raise ConfigurationError(f"Unknown quota resource(s) {unknown}; known: {sorted(known)}.")
        return cls(name, **dict(limits))

    def to_mapping(self) -> dict[str, int | None]:
        return {resource.value: self.limit(resource) for resource in Resource}


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """The document's per-tenant settings: where the tenant is reached, and its profiles."""

    api_subdomain: str | None = None
    """The left-most label of the API host, e.g. "client001" for client001.api.example.com."""
    cli_prefix: str | None = None
    """What `nexus --tenant <prefix>` names."""
    mcp_port: int | None = None
    """The MCP listener of this tenant (port-offset routing)."""
    quota_profile: str | None = None
    """A built-in or registered `QuotaProfile`; the tenant manager's own quotas when None."""
    compliance_level: str | None = None
    """A label the tenant's workflows read from `tenant_context["config"]` (e.g. "hipaa_sox")."""

    def __post_init__(self) -> None:
        _check_optional(self.api_subdomain, _SUBDOMAIN, "api_subdomain", "a DNS label (a-z, 0-9, '-')")
        _check_optional(self.cli_prefix, _PREFIX, "cli_prefix", "lowercase letters, digits, '_' and '-'")
        _check_optional(self.quota_profile, _WORD, "quota_profile", "a profile name")
        _check_optional(self.compliance_level, _WORD, "compliance_level", "a lowercase word like hipaa_sox")
        port = self.mcp_port
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535
        ):
            raise ConfigurationError(f"mcp_port must be a port number from 1 to 65535, got {port!r}.")

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | None) -> TenantConfig:
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise ConfigurationError(f"A tenant's config must be a dict, not {type(config).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in config if key not in known)
        if unknown:
            raise ConfigurationError(f"Unknown tenant config key(s) {unknown}; known: {sorted(known)}.")
        return cls(**dict(config))

    def to_mapping(self) -> dict[str, Any]:
        """Only the keys that are set (what `tenant_context["config"]` shows a workflow)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    name: str
    config: TenantConfig
    created_at: datetime
    status: TenantStatus = TenantStatus.ACTIVE
    suspended_at: datetime | None = None
    shared_workflows: frozenset[str] = frozenset()
    """Tenant-scoped workflows registered for other tenants that are shared with this one too."""

    def __post_init__(self) -> None:
        check_tenant_id(self.tenant_id)
        shared = self.shared_workflows
        if not isinstance(shared, frozenset) or not all(
            isinstance(name, str) and WORKFLOW_NAME.fullmatch(name) for name in shared
        ):
            raise ConfigurationError("shared_workflows must be a frozenset of workflow names.")
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > _NAME_MAX:
            raise ConfigurationError(f"A tenant's name is 1 to {_NAME_MAX} characters, got {self.name!r}.")
        if any(unicodedata.category(char) in _UNPRINTABLE for char in self.name):
            raise ConfigurationError(
                "A tenant's name must not hold control, format or line-breaking characters."
            )
        if self.created_at.tzinfo is None:
            raise ConfigurationError("created_at must be timezone-aware.")

    @property
    def is_active(self) -> bool:
        return self.status is TenantStatus.ACTIVE


def check_tenant_id(tenant_id: object) -> str:
    """The id itself, or `ConfigurationError` naming the rule (it becomes a schema name and a key)."""
    if not isinstance(tenant_id, str) or _TENANT_ID.fullmatch(tenant_id) is None:
        raise ConfigurationError(
            f"Invalid tenant id {str(tenant_id)[:64]!r}: a lowercase letter, then up to 47 lowercase "
            "letters, digits or '_'."
        )
    if tenant_id in _SHARED_SCHEMAS or tenant_id.startswith("pg_"):
        # A tenant named like PostgreSQL's own or the shared schema would share its tables.
        raise ConfigurationError(
            f"Invalid tenant id {tenant_id!r}: it names a schema PostgreSQL or Nexus keeps."
        )
    return tenant_id


def check_word(value: object, what: str) -> str:
    if not isinstance(value, str) or _WORD.fullmatch(value) is None:
        raise ConfigurationError(f"Invalid {what} {str(value)[:64]!r}: lowercase letters, digits and '_'.")
    return value


def _check_optional(value: object, pattern: re.Pattern[str], name: str, rule: str) -> None:
    if value is not None and (not isinstance(value, str) or pattern.fullmatch(value) is None):
        raise ConfigurationError(f"Invalid {name} {str(value)[:64]!r}: {rule}.")


# Built in; an app may register more (the document's `quota_profile` names one of them).
BUILTIN_PROFILES: Mapping[str, QuotaProfile] = MappingProxyType(
    {
        profile.name: profile
        for profile in (
            QuotaProfile("standard", 1_000, 10, 10, 10, 1_000),
            QuotaProfile("enterprise_small", 5_000, 25, 50, 25, 5_000),
            QuotaProfile("enterprise_large", 50_000, 100, 500, 100, 50_000),
            QuotaProfile("unlimited"),
        )
    }
)
