"""The authorization seam: one decision point every channel goes through.

Until RBAC/ABAC are configured the authorizer allows everything and says so in its reason;
`nexus.core.policy.decision.PolicyAuthorizer` is the one that enforces roles and policies.
"""

from __future__ import annotations

from typing import Protocol

from nexus.core.types import Decision, Invocation, WorkflowInfo

ALLOW_ALL = Decision(allowed=True, reason="no authorization policy configured: allow all")


class Authorizer(Protocol):
    def decide(self, invocation: Invocation, workflow: WorkflowInfo | None) -> Decision:
        """Decide whether `invocation` (its principal, channel, action, surface and client address)
        may act on `workflow`: as a tool, command or endpoint, or as an MCP resource when the surface
        is "resources"; on a named surface ("health", "authz") when `workflow` is None; or on the
        workflow collection itself when both are None."""
        ...


class AllowAll:
    """The authorizer in force before any policy is set."""

    def decide(self, invocation: Invocation, workflow: WorkflowInfo | None) -> Decision:
        return ALLOW_ALL
