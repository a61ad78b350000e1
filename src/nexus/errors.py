"""The one exception tree of Nexus.

Each class knows how every channel renders it: HTTP status, CLI exit code, MCP form and a stable
`code`. Channels translate these; they never invent their own. Imports nothing from the project.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

McpRendering = Literal["tool_error", "invalid_params", "transport_401", "internal_error"]


class NexusError(Exception):
    """Base of every error a caller can see; `message` is safe to show to that caller."""

    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 70
    mcp: ClassVar[McpRendering] = "internal_error"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = detail

    def to_problem(self, *, instance: str | None = None) -> dict[str, Any]:
        """Render as an RFC 9457 problem document (without the transport)."""
        problem: dict[str, Any] = {
            "type": f"https://nexus.dev/errors/{self.code}",
            "title": self.title,
            "status": self.http_status,
            "detail": self.message,
            "code": self.code,
        }
        if instance is not None:
            problem["instance"] = instance
        problem.update(self.detail)
        return problem


class ConfigurationError(NexusError, ValueError):
    """A setting that cannot be honoured; raised at construction or `start()`, never while serving."""

    code = "configuration_error"
    title = "Invalid configuration"


class TenantConflictError(ConfigurationError):
    """A tenant id, API subdomain, CLI prefix or MCP port that is already another tenant's (each
    names exactly one tenant); a `ConfigurationError`, so callers that catch that keep working."""

    code = "tenant_conflict"
    title = "Tenant conflict"
    http_status = 409
    exit_code = 65  # EX_DATAERR: the data given clashes with what exists
    mcp = "tool_error"


class WorkflowDefinitionError(NexusError, ValueError):
    """A workflow graph or node configuration that cannot be built."""

    code = "workflow_definition_error"
    title = "Invalid workflow definition"


class InvalidInputError(NexusError):
    code = "invalid_input"
    title = "Invalid input"
    http_status = 422
    exit_code = 2
    mcp = "tool_error"


class PayloadTooLargeError(InvalidInputError):
    code = "payload_too_large"
    title = "Payload too large"
    http_status = 413


class WorkflowNotFoundError(NexusError):
    code = "workflow_not_found"
    title = "Workflow not found"
    http_status = 404
    exit_code = 2
    mcp = "invalid_params"


class TenantNotFoundError(WorkflowNotFoundError):
    """The route names no tenant this credential may reach: unknown, or another tenant's (the
    two look the same, so a route reveals nothing about tenants the caller is not a member of)."""

    code = "tenant_not_found"
    title = "Tenant not found"


class AuthenticationError(NexusError):
    code = "not_authenticated"
    title = "Authentication required"
    http_status = 401
    exit_code = 77
    mcp: ClassVar[McpRendering] = "transport_401"


class ForbiddenError(NexusError):
    code = "forbidden"
    title = "Forbidden"
    http_status = 403
    exit_code = 77
    mcp = "tool_error"


class TenantSuspendedError(ForbiddenError):
    """The route's tenant is suspended: every channel refuses its calls until it is resumed."""

    code = "tenant_suspended"
    title = "Tenant suspended"


class RateLimitedError(NexusError):
    code = "rate_limited"
    title = "Too many requests"
    http_status = 429
    exit_code = 75
    mcp = "tool_error"

    def __init__(self, message: str, *, retry_after: int, **detail: Any) -> None:
        super().__init__(message, retry_after=retry_after, **detail)
        self.retry_after = retry_after


class QuotaExceededError(RateLimitedError):
    code = "quota_exceeded"
    title = "Quota exceeded"


class DependencyUnavailableError(NexusError):
    code = "dependency_unavailable"
    title = "Dependency unavailable"
    http_status = 503
    exit_code = 69
    mcp = "tool_error"


class DeadlineExceededError(NexusError):
    code = "timeout"
    title = "Timed out"
    http_status = 504
    exit_code = 69
    mcp = "tool_error"


class WorkflowFailedError(NexusError):
    """A node raised; `node_id` names it and `__cause__` keeps the original for logs, never for callers."""

    code = "workflow_failed"
    title = "Workflow failed"
    http_status = 422
    exit_code = 1
    mcp = "tool_error"

    def __init__(self, message: str, *, node_id: str, **detail: Any) -> None:
        super().__init__(message, node_id=node_id, **detail)
        self.node_id = node_id


class InternalError(NexusError):
    """Anything unexpected; the caller sees only the request id."""


class AuditIntegrityError(NexusError):
    """The audit trail's hash chain is broken where a purge would delete: nothing is deleted, so
    the evidence stays for `nexus audit verify` to show."""

    code = "audit_integrity"
    title = "Audit trail broken"
    exit_code = 65  # EX_DATAERR: the stored data is not what was written


class MfaRequiredError(AuthenticationError):
    """The first factor passed; a second one is due. `challenge_id` names the pending login."""

    code = "mfa_required"
    title = "Second factor required"
    mcp = "tool_error"


class MfaEnrollmentRequiredError(AuthenticationError):
    """The first factor passed, MFA is required and the user has no active factor to answer with."""

    code = "mfa_enrollment_required"
    title = "Second factor enrollment required"
    mcp = "tool_error"


class ReauthenticationRequiredError(AuthenticationError):
    """The call is sensitive and the caller's last authentication is too old (step-up)."""

    code = "reauth_required"
    title = "Re-authentication required"
    mcp = "tool_error"


class AccountLockedError(AuthenticationError):
    """Too many failed logins from this address or for this account; retry after `retry_after`."""

    code = "login_throttled"
    title = "Too many failed logins"
    http_status = 429
    exit_code = 75
    mcp = "tool_error"

    def __init__(self, message: str, *, retry_after: int, **detail: Any) -> None:
        super().__init__(message, retry_after=retry_after, **detail)
        self.retry_after = retry_after
