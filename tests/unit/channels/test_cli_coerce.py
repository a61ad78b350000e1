"""Coercion of the CLI's raw `key=value` strings by a workflow's input JSON Schema."""

from __future__ import annotations

from typing import Any

import pytest

from nexus.channels.cli.coerce import coerce_params, coerce_value
from nexus.workflow import WorkflowBuilder


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("-7", -7),
        ("+3", 3),
        (" 12 ", 12),
        ("0", 0),
        ("123456789012345678901234567890", 123456789012345678901234567890),
    ],
)
def test_integer_text_becomes_an_int(text: str, expected: int) -> None:
    value = coerce_value(text, {"type": "integer"})
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize("text", ["4.0", "1e3", "0x10", "1_000", "١٢", "", "  ", "12abc", "nan", "9" * 5000])
def test_text_that_is_not_a_plain_integer_stays_a_string_for_integer_inputs(text: str) -> None:
    assert coerce_value(text, {"type": "integer"}) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3.5", 3.5), ("-0.25", -0.25), (".5", 0.5), ("1e3", 1000.0), ("2E-2", 0.02), ("7", 7), ("5.", 5.0)],
)
def test_number_text_becomes_a_number(text: str, expected: float) -> None:
    assert coerce_value(text, {"type": "number"}) == expected


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity", "1e999", "1.2.3", "e5", "0x1p3", "1,5"])
def test_non_finite_or_malformed_numbers_stay_strings(text: str) -> None:
    assert coerce_value(text, {"type": "number"}) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("1", True),
        ("false", False),
        ("No", False),
        ("0", False),
    ],
)
def test_boolean_words_become_booleans(text: str, expected: bool) -> None:
    assert coerce_value(text, {"type": "boolean"}) is expected


@pytest.mark.parametrize("text", ["y", "on", "2", "", "truthy"])
def test_other_words_stay_strings_for_boolean_inputs(text: str) -> None:
    assert coerce_value(text, {"type": "boolean"}) == text


def test_json_text_becomes_an_array_or_object() -> None:
    assert coerce_value('[1, "a", null]', {"type": "array"}) == [1, "a", None]
    assert coerce_value('{"k": {"n": 1}}', {"type": "object"}) == {"k": {"n": 1}}


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('{"a": 1}', "array"),
        ("[1]", "object"),
        ("[1,", "array"),
        ("not json", "object"),
        ("[" * 5000, "array"),
    ],
)
def test_json_of_the_wrong_shape_or_broken_json_stays_a_string(text: str, kind: str) -> None:
    assert coerce_value(text, {"type": kind}) == text


def test_string_inputs_keep_the_text_exactly_as_typed() -> None:
    assert coerce_value("007", {"type": "string"}) == "007"
    assert coerce_value(" true ", {"type": ["string", "boolean"]}) == " true "


def test_a_type_list_tries_each_type_in_order() -> None:
    assert coerce_value("5", {"type": ["integer", "null"]}) == 5
    assert coerce_value("null", {"type": ["integer", "null"]}) is None
    assert coerce_value("maybe", {"type": ["integer", "null"]}) == "maybe"


def test_any_of_branches_are_used_when_no_type_is_declared() -> None:
    schema = {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}
    assert coerce_value("3", schema) == 3
    assert coerce_value("yes", schema) is True


def test_untyped_enum_picks_the_member_the_text_spells() -> None:
    assert coerce_value("2", {"enum": [1, 2, 3]}) == 2
    assert coerce_value("red", {"enum": ["red", 1]}) == "red"
    assert coerce_value("true", {"const": True}) is True
    assert coerce_value("4", {"enum": [1, 2, 3]}) == "4"


@pytest.mark.parametrize(
    "schema", [None, "integer", 5, [], {}, {"type": 3}, {"type": "mystery"}, {"$ref": "#/x"}]
)
def test_unusable_property_schemas_leave_the_text_alone(schema: Any) -> None:
    assert coerce_value("12", schema) == "12"


def test_params_are_coerced_by_the_declared_inputs_of_a_real_workflow() -> None:
    builder = WorkflowBuilder()
    builder.add_input("count", int).add_input("ratio", float).add_input("dry_run", bool)
    builder.add_input("tags", list).add_input("name", str)
    builder.add_node("PythonCodeNode", "echo", {"code": "result = count"})
    schema = builder.build().input_schema
    raw = {"count": "3", "ratio": "0.5", "dry_run": "no", "tags": '["a"]', "name": "42", "extra": "7"}
    assert coerce_params(raw, schema) == {
        "count": 3,
        "ratio": 0.5,
        "dry_run": False,
        "tags": ["a"],
        "name": "42",
        "extra": "7",
    }


def test_free_form_schemas_and_non_string_values_pass_through() -> None:
    assert coerce_params({"a": "1", "b": 2, "c": None}, {"type": "object"}) == {"a": "1", "b": 2, "c": None}
    assert coerce_params({"a": "1"}, {"properties": "broken"}) == {"a": "1"}
