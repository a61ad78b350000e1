"""Templates: plain substitution, and identifier-only substitution for SQL text."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from nexus.errors import InvalidInputError
from nexus.workflow.template import fill_nested, fill_template, nested_template_names, template_names


def test_templates_are_filled_from_values() -> None:
    assert fill_template("Hello ${name}, ${name}! ${n}", {"name": "Ada", "n": 3}) == "Hello Ada, Ada! 3"


def test_template_names_are_listed_once_in_order() -> None:
    assert template_names("${b} ${a} ${b} $notone {c}") == ("b", "a")
    assert nested_template_names({"h": ["${x}", {"y": "${y}"}], "n": 1}) == ("x", "y")


def test_missing_value_is_invalid_input_naming_template_and_node() -> None:
    with pytest.raises(InvalidInputError, match="node 'q': template '\\$\\{table\\}' has no value") as caught:
        fill_template("select * from ${table}", {}, node_id="q")
    assert caught.value.detail == {
        "node_id": "q",
        "errors": [{"path": "table", "message": "required by a template"}],
    }


@pytest.mark.parametrize("value", ["users", "_t", "T9", "a" * 63])
def test_identifier_mode_accepts_identifiers(value: str) -> None:
    filled = fill_template("select * from ${t}", {"t": value}, identifiers_only=True)
    assert filled.split(" ")[-1] == value


@pytest.mark.parametrize(
    "value",
    ["x; DROP TABLE users", "a.b", "", "9lives", "a" * 64, "users--", "naïve", "a b", "a\n", 1, None, "'x'"],
)
def test_identifier_mode_rejects_anything_else(value: object) -> None:
    with pytest.raises(InvalidInputError, match="accepts only an identifier") as caught:
        fill_template("select * from ${t}", {"t": value}, identifiers_only=True)
    assert caught.value.detail["errors"][0]["path"] == "t"


def test_encoder_applies_to_substituted_values_only() -> None:
    filled = fill_template(
        "http://h/items/${id}?q=${q}", {"id": "a/b", "q": "x&y=z"}, encode=lambda v: quote(v, safe="")
    )
    assert filled == "http://h/items/a%2Fb?q=x%26y%3Dz"


def test_nested_fill_keeps_types_for_whole_string_templates() -> None:
    filled = fill_nested({"limit": "${n}", "label": "n=${n}", "tags": ["${t}"]}, {"n": 5, "t": "x"})
    assert filled == {"limit": 5, "label": "n=5", "tags": ["x"]}
