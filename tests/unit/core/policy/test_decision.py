"""The decision point: RBAC then ABAC, visibility, reasons, caching and invalidation, explain."""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from tests.unit.core.policy.asking import ask, deciding, explain

from nexus.core.policy.abac import PolicySet
from nexus.core.policy.decision import PolicyAuthorizer
from nexus.core.policy.rbac import RoleBook
from nexus.core.types import Principal, WorkflowInfo
from nexus.errors import ConfigurationError
from nexus.testing.clock import FakeClock


def info(name: str, *tags: str, **attributes: Any) -> WorkflowInfo:
    return WorkflowInfo(name, None, tags, MappingProxyType({}), MappingProxyType(attributes))


def who(*roles: str, **attributes: Any) -> Principal:
    return Principal(id="u1", kind="password", roles=frozenset(roles), attributes=attributes, name="ann")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))


@pytest.fixture
def book() -> RoleBook:
    book = RoleBook()
    book.define("executive", ["api:read:dashboards", "mcp:read:resources"])
    book.define("operator", ["api:execute:monitoring_workflows", "cli:execute:deploy", "api:read:health"])
    book.define("developer", ["api:*:workflows", "mcp:*:tools"])
    return book


def test_read_allowed_execute_refused_is_forbidden_not_hidden(book: RoleBook, clock: FakeClock) -> None:
    decide = deciding(PolicyAuthorizer(book, None, clock, UTC))
    board = info("board", "dashboards")
    assert decide(who("executive"), "api", "read", board).allowed
    run = decide(who("executive"), "api", "execute", board)
    assert (run.allowed, run.visible) == (False, True)
    assert run.reason == (
        "denied: no permission of the roles held (executive) allows api:execute on workflow 'board'"
    )
    hidden = decide(who("executive"), "cli", "execute", board)
    assert (hidden.allowed, hidden.visible) == (False, False)


def test_the_channel_word_names_every_workflow_of_that_channel_only(book: RoleBook, clock: FakeClock) -> None:
    decide = deciding(PolicyAuthorizer(book, None, clock, UTC))
    anything = info("anything", "misc")
    assert decide(who("developer"), "api", "execute", anything).allowed
    assert decide(who("developer"), "mcp", "execute", anything).allowed
    assert not decide(who("developer"), "cli", "read", anything).visible
    # "mcp:*:tools" is about tools; workflows seen as MCP resources need "resources".
    assert not decide(who("developer"), "mcp", "read", anything, surface="resources").allowed
    assert decide(who("executive"), "mcp", "read", anything, surface="resources").allowed


def test_surfaces_are_named_by_their_own_word(book: RoleBook, clock: FakeClock) -> None:
    decide = deciding(PolicyAuthorizer(book, None, clock, UTC))
    assert decide(who("operator"), "api", "read", None, surface="health").allowed
    assert not decide(who("operator"), "cli", "read", None, surface="health").allowed
    assert not decide(who("developer"), "api", "explain", None, surface="authz").allowed


def test_a_permit_policy_must_hold_and_a_missing_attribute_fails_closed(
    book: RoleBook, clock: FakeClock
) -> None:
    policies = PolicySet()
    policies.add(
        "data_access_control",
        {
            "condition": "user.clearance_level >= resource.classification_level",
            "channels": ["*"],
            "resources": ["classified_workflows"],
            "effect": "permit",
        },
    )
    decide = deciding(PolicyAuthorizer(book, policies, clock, UTC))
    secret = info("secret", "classified_workflows", classification_level=3)
    assert decide(who("developer", clearance_level=3), "api", "execute", secret).allowed
    low = decide(who("developer", clearance_level=2), "api", "execute", secret)
    assert (low.allowed, low.visible) == (False, False)
    assert low.reason == "denied: policy 'data_access_control' (permit) did not hold"
    unknown = decide(who("developer"), "api", "execute", secret)
    assert not unknown.allowed
    assert (
        unknown.reason
        == "denied: policy 'data_access_control' (permit) undecided: missing user.clearance_level"
    )
    # Policies apply only where their resources say.
    assert decide(who("developer"), "api", "execute", info("plain")).allowed


def test_a_deny_policy_refuses_when_its_condition_holds_or_cannot_be_decided(
    book: RoleBook, clock: FakeClock
) -> None:
    policies = PolicySet()
    policies.add(
        "no_embargo", {"condition": "user.location in ['XX']", "effect": "deny", "actions": ["execute"]}
    )
    decide = deciding(PolicyAuthorizer(book, policies, clock, UTC))
    target = info("anything")
    assert decide(who("developer", location="US"), "api", "execute", target).allowed
    embargoed = decide(who("developer", location="XX"), "api", "execute", target)
    # Narrowed to execute: the workflow stays visible, the run is forbidden.
    assert (embargoed.allowed, embargoed.visible) == (False, True)
    assert not decide(who("developer"), "api", "execute", target).allowed
    assert decide(who("developer"), "api", "read", target).allowed


def test_time_is_read_in_the_configured_zone(book: RoleBook, clock: FakeClock) -> None:
    policies = PolicySet()
    policies.add("hours", {"condition": "current_time between 09:00 and 17:00", "effect": "permit"})
    anything = info("anything")
    utc = PolicyAuthorizer(book, policies, clock, UTC)
    tokyo = PolicyAuthorizer(book, policies, clock, ZoneInfo("Asia/Tokyo"))  # 19:00 there
    assert ask(utc, who("developer"), "api", "execute", anything).allowed
    assert not ask(tokyo, who("developer"), "api", "execute", anything).allowed
    clock.set(datetime(2026, 3, 2, 1, 0, tzinfo=UTC))  # 10:00 in Tokyo
    assert ask(tokyo, who("developer"), "api", "execute", anything).allowed
    assert not ask(utc, who("developer"), "api", "execute", anything).allowed


def test_changes_to_roles_and_policies_take_effect_on_the_next_decision(
    book: RoleBook, clock: FakeClock
) -> None:
    policies = PolicySet()
    authorizer = PolicyAuthorizer(book, policies, clock, UTC)
    target = info("deploy")
    assert not ask(authorizer, who("analyst"), "api", "execute", target).visible
    book.define("analyst", ["api:execute:deploy"])
    assert ask(authorizer, who("analyst"), "api", "execute", target).allowed
    policies.add("never", {"condition": "user.name == 'nobody'", "effect": "permit"})
    assert not ask(authorizer, who("analyst"), "api", "execute", target).allowed
    policies.remove("never")
    assert ask(authorizer, who("analyst"), "api", "execute", target).allowed


def test_explain_lists_the_roles_the_permission_and_every_applicable_policy(
    book: RoleBook, clock: FakeClock
) -> None:
    policies = PolicySet()
    policies.add("hours", {"condition": "current_time between 09:00 and 17:00", "effect": "permit"})
    policies.add(
        "where", {"condition": "user.location in ['US', 'EU']", "channels": ["api"], "effect": "permit"}
    )
    explained = explain(
        PolicyAuthorizer(book, policies, clock, UTC), who("developer"), "api", "execute", info("x")
    )
    document = explained.to_document()
    assert document["outcome"] == "invisible"
    assert document["permission"] == "role 'developer' grants 'api:*:workflows'"
    assert document["roles"] == ["developer"]
    assert [(p["name"], p["held"], p["missing"]) for p in document["policies"]] == [
        ("hours", True, []),
        ("where", None, ["user.location"]),
    ]


def test_policy_documents_are_checked_when_added() -> None:
    policies = PolicySet()
    with pytest.raises(ConfigurationError, match="unknown key"):
        policies.add("p", {"condition": "true == true", "effect": "permit", "priority": 1})
    with pytest.raises(ConfigurationError, match="effect"):
        policies.add("p", {"condition": "true == true", "effect": "allow"})
    with pytest.raises(ConfigurationError, match="channels"):
        policies.add("p", {"condition": "true == true", "effect": "permit", "channels": ["web"]})
    with pytest.raises(ConfigurationError, match=r"Policy 'p': .*line 1, column"):
        policies.add("p", {"condition": "user.x >", "effect": "permit"})
    assert len(policies) == 0
