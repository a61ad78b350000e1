"""Declared workflow inputs: one JSON Schema (draft 2020-12) and its validator, compiled at build.

Every channel shows and enforces this same schema. `jsonschema` is imported only when a workflow
with declared inputs is built, which keeps `import nexus.workflow` cheap.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from nexus.errors import InvalidInputError, WorkflowDefinitionError
from nexus.workflow.node import MISSING
from nexus.workflow.template import IDENTIFIER

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_PYTHON_TYPES: Mapping[type, str] = MappingProxyType(
    {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "object"}
)
FREE_FORM: Mapping[str, Any] = MappingProxyType({"type": "object", "additionalProperties": True})


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One declared input; `schema` is its JSON Schema, derived from a Python type or given as-is."""

    name: str
    schema: Mapping[str, Any]
    required: bool
    default: Any = MISSING
    description: str | None = None


def declare_input(
    name: str, kind: type | Mapping[str, Any], *, required: bool, default: Any, description: str | None
) -> InputSpec:
    """Build an `InputSpec`; a default makes the input optional."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise WorkflowDefinitionError(f"input name {name!r} must match {IDENTIFIER.pattern}")
    if isinstance(kind, Mapping):
        schema = copy.deepcopy(dict(kind))
    elif isinstance(kind, type) and kind in _PYTHON_TYPES:
        schema = {"type": _PYTHON_TYPES[kind]}
    else:
        allowed = ", ".join(t.__name__ for t in _PYTHON_TYPES)
        raise WorkflowDefinitionError(
            f"input '{name}': type must be one of {allowed} or a JSON Schema dict, not {kind!r}"
        )
    if description is not None:
        schema["description"] = description
    if default is not MISSING:
        schema["default"] = copy.deepcopy(default)
    return InputSpec(name, MappingProxyType(schema), required and default is MISSING, default, description)


def build_schema(specs: tuple[InputSpec, ...]) -> Mapping[str, Any]:
    """The workflow's input schema: strict with declarations, free-form without."""
    if not specs:
        return MappingProxyType({"$schema": DIALECT, **FREE_FORM})
    return MappingProxyType(
        {
            "$schema": DIALECT,
            "type": "object",
            "properties": {spec.name: dict(spec.schema) for spec in specs},
            "required": [spec.name for spec in specs if spec.required],
            "additionalProperties": False,
        }
    )


# Keywords whose meaning is the same in draft 2020-12 and in fastjsonschema's draft 7. A schema using
# only these gets the generated-code validator; anything else is checked by jsonschema alone.
_FAST_KEYWORDS = frozenset(
    {
        "$schema",
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "title",
        "description",
        "default",
        "examples",
    }
)


def _is_fast(schema: Any) -> bool:
    """True when every keyword, at every depth, is one `_FAST_KEYWORDS` names (or a dict `items`)."""
    if not isinstance(schema, dict):
        return isinstance(schema, bool)
    for key, value in schema.items():
        if key == "properties":
            if not isinstance(value, dict) or not all(_is_fast(sub) for sub in value.values()):
                return False
        elif key in ("items", "additionalProperties"):
            if not _is_fast(value):
                return False
        elif key not in _FAST_KEYWORDS:
            return False
    return True


def _compile_fast(plain: dict[str, Any]) -> tuple[Any, type[Exception]] | None:
    """The generated validator and the exception it raises, or None when the schema is not fast-safe."""
    if not _is_fast(plain):
        return None
    import fastjsonschema

    draft7 = {key: value for key, value in plain.items() if key != "$schema"}
    return fastjsonschema.compile(draft7, use_default=False), fastjsonschema.JsonSchemaValueException


class InputValidator:
    """Applies defaults and validates inputs against the compiled schema.

    Valid inputs (the hot path) are checked by code generated from the schema at build; only
    invalid ones go through jsonschema, which explains every problem precisely.
    """

    def __init__(self, specs: tuple[InputSpec, ...], schema: Mapping[str, Any]) -> None:
        self._specs = specs
        self._validator: Any = None
        self._fast: tuple[Any, type[Exception]] | None = None
        if specs:
            # Imported here, not at module import: most imports of nexus.workflow never validate.
            from jsonschema import Draft202012Validator, SchemaError

            plain = copy.deepcopy(thaw(schema))
            try:
                Draft202012Validator.check_schema(plain)
            except SchemaError as exc:
                raise WorkflowDefinitionError(f"invalid input schema: {exc.message}") from exc
            self._validator = Draft202012Validator(plain)
            self._fast = _compile_fast(plain)
            self._check_defaults()

    def _check_defaults(self) -> None:
        for spec in self._specs:
            if spec.default is not MISSING:
                errors = self._schema_errors({spec.name: spec.default})
                if errors:
                    raise WorkflowDefinitionError(
                        f"input '{spec.name}': default {spec.default!r} is invalid: {errors[0]['message']}"
                    )

    def validate(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Return the inputs with defaults applied, or raise `InvalidInputError` listing every problem."""
        values = dict(inputs)
        if self._validator is None:
            return values
        for spec in self._specs:
            if spec.default is not MISSING and spec.name not in values:
                values[spec.name] = copy.deepcopy(spec.default)
        if self._fast is not None and self._passes_fast(values):
            return values
        errors = self._errors(values)
        if errors:
            summary = "; ".join(f"{error['path'] or '(root)'}: {error['message']}" for error in errors)
            raise InvalidInputError(summary, errors=errors)
        return values

    def _passes_fast(self, values: dict[str, Any]) -> bool:
        assert self._fast is not None  # noqa: S101  # checked by the caller
        check, invalid = self._fast
        try:
            check(values)
        except invalid:
            return False
        return True

    def _errors(self, values: Mapping[str, Any]) -> list[dict[str, str]]:
        known = {spec.name for spec in self._specs}
        errors = [{"path": name, "message": "unknown input"} for name in sorted(set(values) - known)]
        errors += [
            {"path": spec.name, "message": "required input is missing"}
            for spec in self._specs
            if spec.required and spec.name not in values
        ]
        return errors + self._schema_errors({k: v for k, v in values.items() if k in known})

    def _schema_errors(self, values: Mapping[str, Any]) -> list[dict[str, str]]:
        found = sorted(self._validator.iter_errors(values), key=lambda e: [str(p) for p in e.absolute_path])
        return [
            {"path": "/".join(str(part) for part in error.absolute_path), "message": error.message}
            for error in found
            # Root-level presence problems are reported by _errors, named by input.
            if error.absolute_path or error.validator not in ("required", "additionalProperties")
        ]


def thaw(value: Any) -> Any:
    """Turn read-only mappings back into dicts so jsonschema and JSON encoders accept them."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(item) for item in value]
    return value
