"""The core value types' own behaviour."""

from __future__ import annotations

from dataclasses import fields, replace

from nexus.core.types import (
    ANONYMOUS,
    Action,
    Channel,
    Credential,
    Invocation,
    Principal,
    RouteKind,
    TenantRoute,
)

# A value for every field of Invocation, none of them its default: a copy that dropped a field
# (one added later and not written into `as_made_by`) would differ here.
_EVERY_FIELD_SET = {
    "request_id": "req-1",
    "channel": Channel.MCP,
    "workflow": "report",
    "inputs": {"a": 1},
    "credential": Credential(scheme="bearer", secret="token"),
    "client_addr": "192.0.2.7",
    "principal": ANONYMOUS,
    "action": Action.READ,
    "surface": "resources",
    "route": TenantRoute(RouteKind.HOST, "acme.example.com"),
    "tenant_id": "acme",
    "trace_parent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}


def test_every_invocation_field_is_set_by_the_fixture() -> None:
    assert set(_EVERY_FIELD_SET) == {f.name for f in fields(Invocation)}
    defaults = Invocation(request_id="r", channel=Channel.API, workflow="w", inputs={})
    assert all(
        getattr(defaults, f.name) != _EVERY_FIELD_SET[f.name]
        for f in fields(Invocation)
        if f.name not in ("request_id", "channel", "workflow", "inputs", "principal")
    )


def test_as_made_by_is_replace_of_the_principal_and_keeps_every_other_field() -> None:
    invocation = Invocation(**_EVERY_FIELD_SET)
    alice = Principal(id="user:alice", kind="password", roles=frozenset({"analyst"}))

    made = invocation.as_made_by(alice)

    assert made == replace(invocation, principal=alice)
    assert made.principal is alice
    assert invocation.principal is ANONYMOUS
