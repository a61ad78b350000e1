"""`nexus.testing.authz` bound to one decision point, and the same question for `explain`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nexus.core.authorization import Authorizer
from nexus.core.policy.decision import Explanation, PolicyAuthorizer
from nexus.core.types import Decision, Principal, WorkflowInfo
from nexus.testing.authz import ask, question


def deciding(authorizer: Authorizer) -> Callable[..., Decision]:
    """`ask` bound to one decision point: decide(principal, channel, action, workflow, surface=...)."""
    return lambda principal, channel, action, workflow, **where: ask(
        authorizer, principal, channel, action, workflow, **where
    )


def explain(
    authorizer: PolicyAuthorizer,
    principal: Principal,
    channel: str,
    action: str,
    workflow: WorkflowInfo | None,
    **where: Any,
) -> Explanation:
    return authorizer.explain(question(principal, channel, action, workflow, **where), workflow)
