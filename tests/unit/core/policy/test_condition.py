"""The condition language: the document's forms, every operator, Kleene logic, coercions, errors, limits."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, time, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest

from nexus.core.policy.condition import (
    MAX_CONDITION_CHARS,
    MAX_LIST_ITEMS,
    MAX_NESTING,
    Condition,
    ConditionError,
    compile_condition,
)
from nexus.errors import ConfigurationError


def ctx(user: Any = None, resource: Any = None, env: Any = None, **env_values: Any) -> dict[str, Any]:
    return {"user": user or {}, "resource": resource or {}, "env": {**(env or {}), **env_values}}


def holds(text: str, context: Mapping[str, Any]) -> bool | None:
    return compile_condition(text).evaluate(context)


def error_of(text: Any) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        compile_condition(text)
    return caught.value


# --- The document's forms ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (time(8, 59, 59), False),
        (time(9, 0), True),
        (time(12, 30), True),
        (time(17, 0), True),
        (time(17, 0, 1), False),
        (datetime(2025, 3, 3, 10, 15), True),
        (datetime(2025, 3, 3, 18, 0, tzinfo=UTC), False),
    ],
)
def test_business_hours_hold_inclusively_between_nine_and_five(now: time | datetime, expected: bool) -> None:
    assert holds("current_time between 09:00 and 17:00", ctx(current_time=now)) is expected


@pytest.mark.parametrize(
    ("location", "expected"), [("US", True), ("EU", True), ("APAC", False), ("us", False)]
)
def test_location_must_be_one_of_the_listed_regions(location: str, expected: bool) -> None:
    assert holds("user.location in ['US', 'EU']", ctx(user={"location": location})) is expected


@pytest.mark.parametrize(
    ("clearance", "classification", "expected"),
    [(3, 2, True), (2, 2, True), (1, 2, False), ("3", 2, True), ("1", 2.5, False), (3, "2", True)],
)
def test_clearance_must_reach_the_resource_classification(
    clearance: Any, classification: Any, expected: bool
) -> None:
    context = ctx(user={"clearance_level": clearance}, resource={"classification_level": classification})
    condition = compile_condition("user.clearance_level >= resource.classification_level")
    assert condition.evaluate(context) is expected


def test_paths_are_normalized_with_bare_environment_names_under_env() -> None:
    condition = compile_condition(
        "current_time between 09:00 and 17:00 and channel == 'api' and current_day != 'Sunday' "
        "and client_address in user.allowed.addresses and env.region == 'eu'"
    )
    assert condition.paths == frozenset(
        {
            "env.current_time",
            "env.channel",
            "env.current_day",
            "env.client_address",
            "user.allowed.addresses",
            "env.region",
        }
    )


def test_a_compiled_condition_keeps_its_text_and_equals_another_of_the_same_text() -> None:
    condition = compile_condition("user.a == 1")
    assert condition.text == "user.a == 1"
    assert condition == compile_condition("user.a == 1")
    assert condition != compile_condition("user.a == 2")


def test_a_condition_error_is_a_configuration_error_carrying_its_position() -> None:
    error = error_of("user.a ==")
    assert isinstance(error, ConfigurationError)
    assert error.detail == {"line": 1, "column": 10}


# --- Operators -----------------------------------------------------------------------------------

USER = {"n": 5, "f": 2.5, "s": "abc", "t": True, "roles": ["reader", "admin"], "deep": {"er": {"x": 1}}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user.n == 5", True),
        ("user.n == 5.0", True),
        ("user.n != 5", False),
        ("user.n < 6", True),
        ("user.n <= 5", True),
        ("user.n > 5", False),
        ("user.n >= 5.5", False),
        ("user.f > -3", True),
        ("user.f == 2.5", True),
        ("user.s == 'abc'", True),
        ('user.s != "abc"', False),
        ("user.t == true", True),
        ("user.t != false", True),
        ("user.n in [1, 5, 9]", True),
        ("user.n not in [1, 5, 9]", False),
        ("user.n in []", False),
        ("user.n not in []", True),
        ("'admin' in user.roles", True),
        ("'owner' in user.roles", False),
        ("'owner' not in user.roles", True),
        ("user.n between 1 and 5", True),
        ("user.n between 6 and 9", False),
        ("user.n between 9 and 1", False),
        ("user.deep.er.x == 1", True),
        ("5 == user.n", True),
        ("6 > user.n", True),
        ("1 == 1", True),
        ("09:00 < 10:00", True),
    ],
)
def test_each_operator_decides_as_written(text: str, expected: bool) -> None:
    assert holds(text, ctx(user=USER)) is expected


@pytest.mark.parametrize(
    "text",
    [
        "user.s < '5'",
        "user.s >= user.s",
        "user.t < 2",
        "user.s between '1' and '9'",
        "user.roles == 'admin'",
        "user.deep == 1",
        "user.n == user.s",
        "user.t == 1",
        "user.n == '5a'",
    ],
)
def test_comparing_values_of_kinds_that_do_not_meet_is_unknown(text: str) -> None:
    assert holds(text, ctx(user=USER)) is None


def test_operators_bind_not_tighter_than_and_tighter_than_or() -> None:
    context = ctx(user={"a": 1, "b": 0, "c": 0})
    assert holds("user.a == 1 or user.b == 1 and user.c == 1", context) is True
    assert holds("(user.a == 1 or user.b == 1) and user.c == 1", context) is False
    assert holds("not user.a == 1 and user.b == 0", context) is False
    assert holds("not (user.a == 1 and user.b == 1)", context) is True
    assert holds("not not user.a == 1", context) is True


def test_between_wraps_over_midnight_when_the_start_is_after_the_end() -> None:
    night = compile_condition("current_time between 22:00 and 06:00")
    for now, expected in [
        (time(21, 59), False),
        (time(22, 0), True),
        (time(23, 30), True),
        (time(0, 0), True),
        (time(6, 0), True),
        (time(6, 0, 1), False),
        (time(12, 0), False),
    ]:
        assert night.evaluate(ctx(current_time=now)) is expected, now


def test_between_takes_its_bounds_from_the_context_and_wraps_then_too() -> None:
    condition = compile_condition("current_time between user.shift_start and user.shift_end")
    night = ctx(user={"shift_start": "22:00", "shift_end": time(6)}, current_time=time(1))
    day = ctx(user={"shift_start": time(9), "shift_end": "17:00:00"}, current_time=time(1))
    assert condition.evaluate(night) is True
    assert condition.evaluate(day) is False
    assert condition.evaluate(ctx(user={"shift_start": time(9)}, current_time=time(1))) is None


# --- Three-valued logic --------------------------------------------------------------------------

TRUTH = {True: {"x": 1}, False: {"x": 0}, None: {}}


@pytest.mark.parametrize("a", [True, False, None])
@pytest.mark.parametrize("b", [True, False, None])
def test_and_or_follow_kleene_logic(a: bool | None, b: bool | None) -> None:
    context = ctx(user=TRUTH[a], resource=TRUTH[b])
    kleene_and = False if False in (a, b) else None if None in (a, b) else True
    kleene_or = True if True in (a, b) else None if None in (a, b) else False
    assert holds("user.x == 1 and resource.x == 1", context) is kleene_and
    assert holds("user.x == 1 or resource.x == 1", context) is kleene_or


@pytest.mark.parametrize(("a", "expected"), [(True, False), (False, True), (None, None)])
def test_not_flips_a_known_value_and_keeps_unknown(a: bool | None, expected: bool | None) -> None:
    assert holds("not user.x == 1", ctx(user=TRUTH[a])) is expected


def test_a_missing_or_none_attribute_makes_every_comparison_unknown() -> None:
    for text in ["user.x == 1", "user.x != 1", "user.x in [1]", "user.x not in []", "1 in user.x"]:
        assert holds(text, ctx(user={})) is None, text
        assert holds(text, ctx(user={"x": None})) is None, text
    assert holds("current_time between 09:00 and 17:00", ctx()) is None


def test_a_long_chain_decides_by_its_known_parts() -> None:
    text = " or ".join(f"user.k{i} == 1" for i in range(200))
    assert holds(text, ctx(user={"k199": 1})) is True
    assert holds(text, ctx(user={"k0": 0})) is None
    assert holds(text, ctx(user={f"k{i}": 0 for i in range(200)})) is False


# --- Coercions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text", "expected"),
    [
        ("3", "user.v == 3", True),
        ("03", "user.v == 3", True),
        ("3.0", "user.v == 3", True),
        ("-2.5", "user.v < -2", True),
        ("2", "user.v > 10", False),
        ("3", "user.v == '3'", True),
        ("3.0", "user.v == '3'", False),
        (" 3", "user.v == 3", None),
        ("3e2", "user.v == 300", None),
        ("three", "user.v == 3", None),
        ("٣", "user.v == 3", None),
        (True, "user.v == 1", None),
        (1, "user.v == true", None),
        ("true", "user.v == true", None),
        (3, "user.v in ['3', '4']", True),
        ("4", "user.v in [3, 4]", True),
        (5, "user.v in ['3', 4]", False),
        (5, "user.v in ['x', 4]", None),
        (5, "user.v in [5, 'x']", True),
        ("x", "user.v in ['a', 'b']", False),
        ("10:30", "user.v between 10:00 and 11:00", True),
        ("10:30:15", "user.v == 10:30:15", True),
        ("9:30", "user.v < 10:00", None),
        ("24:00", "user.v < 10:00", None),
        (time(10, 30), "user.v == '10:30'", True),
        (time(10, 30), "user.v > 10", None),
        (datetime(2025, 1, 1, 10, 30), "user.v == 10:30", True),
        (time(10, 30, tzinfo=timezone(timedelta(hours=5))), "user.v == 10:30", True),
        ("abc", "user.v == 'abc'", True),
    ],
)
def test_values_are_coerced_only_where_the_language_says(
    value: Any, text: str, expected: bool | None
) -> None:
    assert holds(text, ctx(user={"v": value})) is expected


def test_membership_is_the_kleene_or_of_equalities_over_context_lists() -> None:
    for items, expected in [
        (["a", "admin"], True),
        (("a", "b"), False),
        ({"admin"}, True),
        (frozenset({"b"}), False),
        (["b", None], None),
        (["admin", None], True),
        ([3, "b"], None),
        ("admin", None),
        ({"admin": 1}, None),
        ([], False),
    ]:
        assert holds("'admin' in user.roles", ctx(user={"roles": items})) is expected, items


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 3


class Region(enum.StrEnum):
    EU = "EU"


class Clock(time):
    def __lt__(self, other: object) -> bool:
        raise AssertionError("a subclass's own methods must not run")


def test_subclasses_of_the_basic_types_count_by_their_base_value() -> None:
    context = ctx(user={"level": Level.HIGH, "region": Region.EU}, current_time=Clock(10, 0))
    assert holds("user.level >= 3", context) is True
    assert holds("user.region in ['US', 'EU']", context) is True
    assert holds("current_time between 09:00 and 17:00", context) is True


def test_any_mapping_is_walked_not_only_dicts() -> None:
    context = MappingProxyType({"user": MappingProxyType({"a": MappingProxyType({"b": 2})})})
    assert holds("user.a.b == 2", context) is True


# --- Security: data is never code and attributes are never read ------------------------------------


class Account:
    department = "finance"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"attribute {name} read")


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "().__class__",
        "user.__class__()",
        "eval('1')",
        "user.x == user.y.__class__.__bases__[0]",
        "lambda: 1",
        "user.x == 1; import os",
    ],
)
def test_python_expressions_are_syntax_errors(text: str) -> None:
    error_of(text)


def test_dunder_names_are_plain_missing_paths_that_never_touch_python_attributes() -> None:
    condition = compile_condition("user.__class__.__name__ == 'dict' or resource.__dict__ == 'x'")
    context = ctx(user={"name": "ann"}, resource={"x": 1})
    assert condition.evaluate(context) is None
    assert condition.missing(context) == ("resource.__dict__", "user.__class__.__name__")


def test_objects_in_the_context_are_not_looked_into() -> None:
    assert holds("user.department == 'finance'", {"user": Account()}) is None
    assert holds("user.department == 'finance'", Account()) is None  # type: ignore[arg-type]


class Exploding(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


def test_a_mapping_that_raises_reads_as_missing() -> None:
    assert holds("user.a == 1 or user.b == 2", ctx(user=Exploding())) is None
    assert compile_condition("user.a == 1").missing(ctx(user=Exploding())) == ("user.a",)


def test_string_literals_are_data_with_only_quote_and_backslash_escapes() -> None:
    context = ctx(user={"s": "it's \"x\" \\ __import__('os')"})
    assert holds(r"""user.s == 'it\'s "x" \\ __import__(\'os\')'""", context) is True
    assert holds(r'''user.s == "it's \"x\" \\ __import__('os')"''', context) is True


# --- Missing -------------------------------------------------------------------------------------


def test_missing_names_absent_and_none_paths_but_not_present_ones_of_another_type() -> None:
    condition = compile_condition(
        "user.a == 1 and user.b.c == 2 and resource.d == 3 and current_time > 09:00"
    )
    context = ctx(user={"a": "not a number", "b": {"c": None}}, resource={"d": 3})
    assert condition.missing(context) == ("env.current_time", "user.b.c")
    assert condition.missing({}) == ("env.current_time", "resource.d", "user.a", "user.b.c")


# --- Syntax errors name line and column ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "says"),
    [
        ("user.a ==", 1, 10, "unexpected end of condition"),
        ("user.a == 1 and", 1, 16, "expected '(', 'false', 'not', 'true'"),
        ("user.a = 3", 1, 8, "unexpected character '='"),
        ("user.a == 1 2", 1, 13, "expected 'and', 'or' or the end of the condition"),
        ("user.a in 'abc'", 1, 11, "expected '[' or an attribute"),
        ("(user.a == 1", 1, 13, "expected ')'"),
        ("user.a == 'open", 1, 11, 'unexpected character "\'"'),
        (r"user.a == 'a\n'", 1, 11, "unexpected character"),
        ("user.a == 9:00", 1, 12, "unexpected character ':'"),
        ("user.a == and", 1, 11, "unexpected 'and'"),
        ("user.a between 1 or 2", 1, 18, "expected 'and'"),
        ("user.a in [1, 2,]", 1, 17, "unexpected ']'"),
        ("user.a == 1 and\n  user.b @ 2", 2, 10, "unexpected character '@'"),
        ("user.a == 1\nor\n\n   (user.b == ", 4, 14, "unexpected end of condition"),
        ("", 1, 1, "expected '(', 'false', 'not', 'true', a number"),
        ("   \n  ", 1, 1, "unexpected end of condition"),
        ("user.a == 1.", 1, 12, "unexpected character '.'"),
        ("user.", 1, 5, "unexpected character '.'"),
        ("user.a > > 1", 1, 10, "expected 'false', 'true', a number, a quoted string"),
        ("user.a", 1, 7, "a comparison (==, !=, <, <=, >, >=)"),
    ],
)
def test_syntax_errors_name_the_line_column_and_what_was_expected(
    text: str, line: int, column: int, says: str
) -> None:
    error = error_of(text)
    assert (error.line, error.column) == (line, column)
    assert f"at line {line}, column {column}" in error.message
    assert says in error.message


@pytest.mark.parametrize(
    ("text", "column", "says"),
    [
        ("foo == 1", 1, "unknown name 'foo'"),
        ("user == 1", 1, "unknown name 'user'"),
        ("user.a == 1 or session.id == 2", 16, "unknown name 'session.id'"),
        ("true == current_date", 9, "unknown name 'current_date'"),
    ],
)
def test_unknown_roots_are_refused_with_the_valid_roots_listed(text: str, column: int, says: str) -> None:
    error = error_of(text)
    assert (error.line, error.column) == (1, column)
    assert says in error.message
    assert "user.<name>, resource.<name>, env.<name> or one of current_time, current_day" in error.message


@pytest.mark.parametrize(
    ("text", "column", "says"),
    [
        ("user.a == 24:00", 11, "invalid time 24:00"),
        ("user.a == 12:60", 11, "invalid time 12:60"),
        ("user.a between 09:00 and 23:59:60", 26, "invalid time 23:59:60"),
        ("3 == 'x'", 1, "number 3 with string 'x'"),
        ("true != 1", 1, "boolean true with number 1"),
        ("'a' < 'b'", 1, "'a' cannot be ordered here"),
        ("user.a < 'abc'", 10, "'abc' cannot be ordered here"),
        ("user.a >= false", 11, "false cannot be ordered here"),
        ("user.a between 1 and 09:00", 22, "09:00 cannot be ordered here"),
        ("user.a between '5' and 09:00", 24, "09:00 cannot be ordered here"),
        ("3 in ['a', 'b']", 1, "number 3 with a list"),
        ("09:00 between 10 and 11", 15, "10 cannot be ordered here"),
    ],
)
def test_comparisons_that_can_never_be_decided_are_refused(text: str, column: int, says: str) -> None:
    error = error_of(text)
    assert (error.line, error.column) == (1, column)
    assert says in error.message


@pytest.mark.parametrize("text", ["user.a < '5'", "user.a between '09:00' and user.b", "'3' in [3]"])
def test_string_literals_that_read_as_numbers_or_times_may_be_ordered(text: str) -> None:
    assert isinstance(compile_condition(text), Condition)


# --- Limits and hostile input ----------------------------------------------------------------------


def test_text_up_to_the_length_limit_compiles_and_longer_is_refused() -> None:
    clause = "user.a == 1"
    at_limit = clause + " " * (MAX_CONDITION_CHARS - len(clause))
    assert compile_condition(at_limit).evaluate(ctx(user={"a": 1})) is True
    error = error_of(at_limit + " ")
    assert "longer than 4096 characters" in error.message
    assert (error.line, error.column) == (1, MAX_CONDITION_CHARS + 1)
    assert error_of("\n" * 5000).line == MAX_CONDITION_CHARS + 1


@pytest.mark.parametrize(("opener", "closer"), [("(", ")"), ("not (", ")"), ("not ", "")])
def test_nesting_up_to_the_limit_compiles_and_deeper_is_refused(opener: str, closer: str) -> None:
    def nested(depth: int) -> str:
        return opener * depth + "user.a == 1" + closer * depth

    levels = MAX_NESTING if opener != "not (" else MAX_NESTING // 2
    assert compile_condition(nested(levels)).evaluate(ctx(user={"a": 1})) in (True, False)
    error = error_of(nested(levels + 1))
    assert "nesting deeper than 32 levels" in error.message
    assert error.line == 1


@pytest.mark.parametrize(
    "text",
    [
        "(" * 2000 + "user.a == 1" + ")" * 2000,
        "not " * 1000 + "user.a == 1",
        "(" * 4000,
        "[" * 4000,
        "user.a in [" * 1000,
        "not (" * 800,
    ],
)
def test_pathological_nesting_is_a_condition_error_never_a_recursion_error(text: str) -> None:
    error_of(text)


def test_lists_up_to_the_item_limit_compile_and_longer_are_refused() -> None:
    def listing(count: int) -> str:
        return "user.a in [" + ", ".join(["1"] * count) + "]"

    assert compile_condition(listing(MAX_LIST_ITEMS)).evaluate(ctx(user={"a": 1})) is True
    error = error_of(listing(MAX_LIST_ITEMS + 1))
    assert (error.column, "list longer than 1000 items" in error.message) == (11, True)


@pytest.mark.parametrize("text", [None, 3, b"user.a == 1", ["user.a == 1"]])
def test_a_condition_that_is_not_a_string_is_refused(text: Any) -> None:
    error = error_of(text)
    assert (error.line, error.column) == (1, 1)
    assert "must be a string" in error.message
