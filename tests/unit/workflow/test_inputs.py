"""Declared inputs: one JSON Schema, validated with defaults applied and precise errors."""

from __future__ import annotations

from typing import Any

import pytest

from nexus.errors import InvalidInputError
from nexus.workflow import Workflow, WorkflowBuilder


def declared() -> Workflow:
    return (
        WorkflowBuilder()
        .add_input("count", int, description="How many")
        .add_input("ratio", float, default=0.5)
        .add_input("name", str, required=False)
        .add_input("flag", bool, default=False)
        .add_input("tags", list, default=[])
        .add_input("extra", dict, required=False)
        .add_input("level", {"type": "string", "enum": ["low", "high"]}, default="low")
        .add_node("PythonCodeNode", "echo", {"code": "result = count"})
        .build()
    )


def test_declared_inputs_make_a_strict_draft_2020_12_schema() -> None:
    schema = declared().input_schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["count"]
    assert schema["properties"]["count"] == {"type": "integer", "description": "How many"}
    assert schema["properties"]["ratio"] == {"type": "number", "default": 0.5}
    assert schema["properties"]["tags"] == {"type": "array", "default": []}
    assert schema["properties"]["extra"] == {"type": "object"}
    assert schema["properties"]["level"] == {"type": "string", "enum": ["low", "high"], "default": "low"}


def test_input_schema_is_a_fresh_copy_each_time() -> None:
    workflow = declared()
    workflow.input_schema["properties"]["count"]["type"] = "string"
    assert workflow.input_schema["properties"]["count"]["type"] == "integer"


def test_undeclared_inputs_are_a_free_form_object() -> None:
    workflow = WorkflowBuilder().add_node("PythonCodeNode", "a", {"code": "result = 1"}).build()
    schema = workflow.input_schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is True
    assert "properties" not in schema
    assert workflow.validate_inputs({"anything": [1, 2]}) == {"anything": [1, 2]}


def test_validation_applies_defaults() -> None:
    assert declared().validate_inputs({"count": 3}) == {
        "count": 3,
        "ratio": 0.5,
        "flag": False,
        "tags": [],
        "level": "low",
    }


def test_defaults_are_copied_so_runs_cannot_share_them() -> None:
    workflow = declared()
    first = workflow.validate_inputs({"count": 1})
    first["tags"].append("mutated")
    assert workflow.validate_inputs({"count": 1})["tags"] == []


def errors_of(workflow: Workflow, inputs: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(InvalidInputError) as caught:
        workflow.validate_inputs(inputs)
    errors: list[dict[str, str]] = caught.value.detail["errors"]
    assert all(error["path"] in str(caught.value) for error in errors)
    return errors


def test_bool_is_not_accepted_as_int() -> None:
    assert errors_of(declared(), {"count": True}) == [
        {"path": "count", "message": "True is not of type 'integer'"}
    ]


def test_missing_required_and_unknown_inputs_are_each_reported_by_path() -> None:
    errors = errors_of(declared(), {"colour": "red"})
    assert {"path": "colour", "message": "unknown input"} in errors
    assert {"path": "count", "message": "required input is missing"} in errors
    assert len(errors) == 2


def test_nested_schema_errors_point_inside_the_input() -> None:
    workflow = (
        WorkflowBuilder()
        .add_input("items", {"type": "array", "items": {"type": "integer"}})
        .add_node("PythonCodeNode", "a", {"code": "result = items"})
        .build()
    )
    assert errors_of(workflow, {"items": [1, "two"]}) == [
        {"path": "items/1", "message": "'two' is not of type 'integer'"}
    ]


def test_enum_violation_is_reported() -> None:
    errors = errors_of(declared(), {"count": 1, "level": "medium"})
    assert errors[0]["path"] == "level"
    assert "medium" in errors[0]["message"]


def test_validator_is_compiled_at_build_not_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    import jsonschema

    workflow = declared()
    original = jsonschema.Draft202012Validator
    compiled: list[object] = []

    class Counting:
        check_schema = staticmethod(original.check_schema)

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            compiled.append(args)
            return original(*args, **kwargs)

    monkeypatch.setattr(jsonschema, "Draft202012Validator", Counting)
    for count in range(3):
        workflow.validate_inputs({"count": count})
    with pytest.raises(InvalidInputError):
        workflow.validate_inputs({"count": "x"})
    assert compiled == []
    declared().validate_inputs({"count": 1})
    assert len(compiled) == 1
