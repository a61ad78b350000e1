"""Ask a decision point as a channel does, to test roles and policies without serving an app.

The question is an `Invocation` (principal, channel, action, surface, client address) and the
target is apart, exactly what the pipeline hands `Authorizer.decide`.
"""

from __future__ import annotations

from nexus.core.authorization import Authorizer
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
    """The call a channel would make: on `workflow`, on a named `surface`, or the listing."""
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
    *,
    surface: str | None = None,
    client_addr: str = "",
) -> Decision:
    """`authorizer`'s decision on that call."""
    call = question(principal, channel, action, workflow, surface=surface, client_addr=client_addr)
    return authorizer.decide(call, workflow)
