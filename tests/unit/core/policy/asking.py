"""Ask a decision point as a channel would: the question as an `Invocation`, the target apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nexus.core.authorization import Authorizer
from nexus.core.policy.decision import Explanation, PolicyAuthorizer
from nexus.core.types import Channel, Decision, Invocation, Principal, WorkflowInfo


def question(
    principal: Principal,
    channel: str,
    action: str,
    workflow: WorkflowInfo | None,
    *,
    surface: str | None = None,
    client_addr: str = "",
) -> Invocation:
    name = workflow.name if workflow is not None else f"_{surface}" if surface else "*"
    return Invocation(
        "test",
        Channel(channel),
        name,
        {},
        principal=principal,
        action=action,
        surface=surface,
        client_addr=client_addr,
    )


def ask(
    authorizer: Authorizer,
    principal: Principal,
    channel: str,
    action: str,
    workflow: WorkflowInfo | None,
    **where: Any,
) -> Decision:
    return authorizer.decide(question(principal, channel, action, workflow, **where), workflow)


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
