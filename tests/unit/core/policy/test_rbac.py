"""Permission strings, roles, inheritance, assignment, and the matcher compiled per role set."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.core.policy.permission import InvalidPermissionError, parse_permission
from nexus.core.policy.rbac import Grants, Role, RoleBook
from nexus.core.types import Principal
from nexus.errors import ConfigurationError


def test_the_three_segments_of_a_permission_are_read_as_written() -> None:
    permission = parse_permission("api:execute:monitoring_workflows")
    assert (permission.channel, permission.action, permission.resource) == (
        "api",
        "execute",
        "monitoring_workflows",
    )
    assert parse_permission("cli:*:*").text == "cli:*:*"
    # The resource is the rest, so a tag with a colon can still be named.
    assert parse_permission("mcp:read:team:finance").resource == "team:finance"


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("api:read", 9),  # two segments: the fault is at the end
        ("web:read:x", 1),  # unknown channel
        ("api::x", 5),  # empty action
        ("api:Read:x", 5),  # actions are lowercase
        ("api:read:", 10),  # empty resource
        ("api:read:da shboards", 12),  # the space
        ("api:exe-cute:x", 8),  # the dash
        ("", 1),
    ],
)
def test_a_malformed_permission_names_the_position_of_its_fault(text: str, position: int) -> None:
    with pytest.raises(InvalidPermissionError) as raised:
        parse_permission(text)
    assert raised.value.position == position
    assert f"at position {position}" in raised.value.message


def test_a_permission_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidPermissionError, match="a permission is a string"):
        parse_permission(["api", "read", "x"])


def test_create_role_refuses_a_bad_permission_and_keeps_nothing() -> None:
    book = RoleBook()
    with pytest.raises(InvalidPermissionError, match="position 5"):
        book.define("broken", ["api:read:x", "api::y"])
    assert book.get("broken") is None


def test_roles_inherit_from_roles_defined_before_them() -> None:
    book = RoleBook()
    book.define("viewer", ["api:read:reports"])
    book.define("editor", ["api:execute:reports"], inherits=["viewer"])
    with pytest.raises(ConfigurationError, match="undefined role"):
        book.define("orphan", [], inherits=["nobody"])
    with pytest.raises(ConfigurationError, match="exists already"):
        book.define("viewer", [])
    with pytest.raises(ConfigurationError, match="inherit from it"):
        book.remove("viewer")
    principal = Principal(id="u1", kind="password", roles=frozenset({"editor"}), name="ann")
    assert book.roles_of(principal) == {"editor", "viewer"}


def test_roles_are_assigned_to_users_groups_and_api_keys() -> None:
    book = RoleBook()
    book.define("ops", ["cli:execute:deploy"])
    book.assign("ops", user="ann")
    book.assign("ops", group="sre")
    book.assign("ops", api_key="abc123")
    ann = Principal(id="u1", kind="password", name="ann")
    grouped = Principal(id="u2", kind="ldap", name="bob", attributes={"groups": ["sre", "dev"]})
    key = Principal(id="key:abc123", kind="api_key", name="ci")
    other = Principal(id="u3", kind="password", name="carl")
    # A key named like a user gets nothing meant for that user.
    impostor = Principal(id="key:zzz", kind="api_key", name="ann")
    assert [book.roles_of(p) for p in (ann, grouped, key, other, impostor)] == [
        {"ops"},
        {"ops"},
        {"ops"},
        set(),
        set(),
    ]
    book.unassign("ops", user="ann")
    assert book.roles_of(ann) == set()
    with pytest.raises(ConfigurationError, match="exactly one holder"):
        book.assign("ops", user="ann", group="sre")


def test_a_change_to_the_book_drops_compiled_role_sets() -> None:
    book = RoleBook()
    book.define("a", ["api:read:x"])
    before = book.version
    grants = book.grants(frozenset({"a"}))
    assert grants.match("api", "read", ("x", "*")) is not None
    book.define("b", ["api:read:y"])
    assert book.version > before
    assert book.grants(frozenset({"a"})) is not grants


def test_execute_implies_read_but_read_does_not_imply_execute() -> None:
    grants = Grants(
        [Role("r", (parse_permission("api:execute:deploy"), parse_permission("api:read:docs")))], frozenset()
    )
    assert grants.match("api", "read", ("deploy", "*")) is not None
    assert grants.match("api", "execute", ("docs", "*")) is None
    assert str(grants.match("api", "execute", ("deploy", "*"))) == "role 'r' grants 'api:execute:deploy'"


def test_the_document_round_trips_and_takes_parents_in_any_order() -> None:
    document = {
        "roles": {
            "child": {"permissions": ["api:read:x"], "inherits": ["parent"]},
            "parent": {"permissions": ["cli:*:*"]},
        },
        "assignments": {"users": {"ann": ["child"]}},
    }
    book = RoleBook.from_document(document)
    assert book.to_document()["roles"]["child"] == {"permissions": ["api:read:x"], "inherits": ["parent"]}
    assert book.roles_of(Principal(id="1", kind="password", name="ann")) == {"child", "parent"}
    with pytest.raises(ConfigurationError, match="each other"):
        RoleBook.from_document({"roles": {"a": {"inherits": ["b"]}, "b": {"inherits": ["a"]}}})


# -- property: the compiled matcher agrees with a direct reading of the permission strings ---------

CHANNEL = st.sampled_from(["api", "cli", "mcp"])
ACTION = st.sampled_from(["read", "execute", "explain"])
NAME = st.sampled_from(["reports", "deploy", "tools", "workflows", "commands", "health", "x.y", "team:fin"])
SEGMENT_C = st.one_of(CHANNEL, st.just("*"))
SEGMENT_A = st.one_of(ACTION, st.just("*"))
SEGMENT_R = st.one_of(NAME, st.just("*"))
PERMISSION = st.tuples(SEGMENT_C, SEGMENT_A, SEGMENT_R).map(":".join)


def _direct(permissions: list[str], channel: str, action: str, names: tuple[str, ...]) -> bool:
    for text in permissions:
        c, a, r = text.split(":", 2)
        if c in ("*", channel) and (a in ("*", action) or action == "read") and (r == "*" or r in names):
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(
    roles=st.lists(st.lists(PERMISSION, max_size=6), min_size=1, max_size=5),
    channel=CHANNEL,
    action=ACTION,
    names=st.lists(NAME, min_size=1, max_size=4, unique=True),
)
def test_the_matcher_agrees_with_the_permission_table(
    roles: list[list[str]], channel: str, action: str, names: list[str]
) -> None:
    book = RoleBook()
    for index, permissions in enumerate(roles):
        book.define(f"r{index}", permissions)
    held = frozenset(f"r{index}" for index in range(len(roles)))
    keys = (*names, "*")
    grant = book.grants(held).match(channel, action, keys)
    assert (grant is not None) == _direct([p for ps in roles for p in ps], channel, action, tuple(names))
    if grant is not None:  # the reason names a permission that really matches
        assert _direct([grant.permission.text], channel, action, tuple(names))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_string_parses_or_fails_with_a_position_inside_it(text: str) -> None:
    failure: InvalidPermissionError | None = None
    try:
        permission = parse_permission(text)
    except InvalidPermissionError as error:
        failure = error
    if failure is not None:
        assert 1 <= failure.position <= len(text) + 1
        assert re.search(r"at position \d+", failure.message)
    else:
        assert f"{permission.channel}:{permission.action}:{permission.resource}" == text
