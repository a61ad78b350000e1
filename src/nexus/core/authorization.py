"""The authorization seam: one decision point every channel goes through.

Until RBAC/ABAC are configured the authorizer allows everything and says so in its reason.
"""

from __future__ import annotations

from typing import Protocol

from nexus.core.types import Action, Channel, Decision, Principal, WorkflowInfo

ALLOW_ALL = Decision(allowed=True, reason="no authorization policy configured: allow all")


class Authorizer(Protocol):
    def decide(
        self, principal: Principal, channel: Channel, action: Action, workflow: WorkflowInfo | None
    ) -> Decision:
        """Decide on `workflow`, or on the workflow collection itself when it is None."""
        ...


class AllowAll:
    """The authorizer in force before any policy is set."""

    def decide(
        self, principal: Principal, channel: Channel, action: Action, workflow: WorkflowInfo | None
    ) -> Decision:
        return ALLOW_ALL
