"""Turn the CLI's raw `key=value` strings into typed inputs, guided by a workflow's input JSON Schema.

Coercion never raises and never decides validity: what it cannot coerce stays a string, so the
pipeline's schema validation (after authorization) rejects it with a precise message. Only orjson.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


class _Keep:
    """Marks 'no coercion applies'; distinct from every JSON value, None included."""


_KEEP = _Keep()


def _as_integer(text: str) -> Any:
    stripped = text.strip()
    if _INTEGER.fullmatch(stripped) is None:
        return _KEEP
    try:
        return int(stripped)
    except ValueError:  # more digits than Python converts safely (sys.int_info.str_digits_check_threshold)
        return _KEEP


def _as_number(text: str) -> Any:
    stripped = text.strip()
    if _NUMBER.fullmatch(stripped) is None:
        return _KEEP
    if _INTEGER.fullmatch(stripped):
        return _as_integer(stripped)
    value = float(stripped)
    # inf cannot travel as JSON; leave the text for the validator to reject.
    return value if math.isfinite(value) else _KEEP


def _as_boolean(text: str) -> Any:
    folded = text.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    return _KEEP


def _as_null(text: str) -> Any:
    return None if text.strip() == "null" else _KEEP


def _json_of(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:  # also raised for nesting deeper than orjson's limit
            return _KEEP
        return value if isinstance(value, kind) else _KEEP

    return parse


_PARSERS: Mapping[str, Callable[[str], Any]] = {
    "integer": _as_integer,
    "number": _as_number,
    "boolean": _as_boolean,
    "null": _as_null,
    "array": _json_of(list),
    "object": _json_of(dict),
}


def _types_of(schema: Mapping[str, Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return [t for t in declared if isinstance(t, str)]
    types: list[str] = []
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list):
            for branch in branches:
                if isinstance(branch, Mapping):
                    types.extend(_types_of(branch))
    return types


def _from_choices(text: str, choices: list[Any]) -> Any:
    """An `enum`/`const` without a type: pick the member whose JSON spelling the text is."""
    if text in choices:
        return text
    for choice in choices:
        if not isinstance(choice, str) and _spelling(choice) == text.strip():
            return choice
    return text


def _spelling(value: Any) -> str | None:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return None


def coerce_value(text: str, schema: Any) -> Any:
    """Coerce one raw string by its property schema; the text itself when nothing applies."""
    if not isinstance(schema, Mapping):
        return text
    types = _types_of(schema)
    if not types:
        choices = schema.get("enum", [schema["const"]] if "const" in schema else None)
        return _from_choices(text, choices) if isinstance(choices, list) else text
    # A property that accepts strings takes the text as typed: "007" stays "007".
    if "string" in types:
        return text
    for kind in types:
        parser = _PARSERS.get(kind)
        value = parser(text) if parser is not None else _KEEP
        if not isinstance(value, _Keep):
            return value
    return text


def coerce_params(params: Mapping[str, Any], input_schema: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce every string parameter by `input_schema`'s properties; other values pass unchanged."""
    properties = input_schema.get("properties")
    if not isinstance(properties, Mapping):
        properties = {}
    return {
        name: coerce_value(value, properties.get(name)) if isinstance(value, str) else value
        for name, value in params.items()
    }
