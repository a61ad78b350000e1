"""The authorization seam: one decision point every channel goes through.

Until RBAC/ABAC are configured the authorizer allows everything and says so in its reason;
`nexus.core.policy.decision.PolicyAuthorizer` is the one that enforces roles and policies.
"""

from __future__ import annotations

from typing import Protocol

from nexus.core.types import Decision, Principal, WorkflowInfo

ALLOW_ALL = Decision(allowed=True, reason="no authorization policy configured: allow all")


class Authorizer(Protocol):
    def decide(
        self,
        principal: Principal,
        channel: str,
        action: str,
        workflow: WorkflowInfo | None,
        *,
        surface: str | None = None,
        client_addr: str = "",
    ) -> Decision:
        """Decide on `workflow` (as a tool, command or endpoint; as an MCP resource when `surface`
        is "resources"), on a named surface ("health", "authz") when it is None, or on the
        workflow collection itself when both are None."""
        ...


class AllowAll:
    """The authorizer in force before any policy is set."""

    def decide(
        self,
        principal: Principal,
        channel: str,
        action: str,
        workflow: WorkflowInfo | None,
        *,
        surface: str | None = None,
        client_addr: str = "",
    ) -> Decision:
        return ALLOW_ALL
