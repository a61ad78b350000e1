"""JSON in and out for every channel: orjson, with a fallback for values workflows commonly return."""

from __future__ import annotations

import base64
import dataclasses
import decimal
import uuid
from collections.abc import Mapping, Set
from typing import Any

import orjson

from nexus.core.types import Result, WorkflowInfo
from nexus.errors import InvalidInputError

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _fallback(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Set):
        return sorted(value, key=repr)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_fallback, option=_OPTIONS)


def loads_object(raw: bytes, *, what: str) -> dict[str, Any]:
    """Parse a JSON object; anything else is `InvalidInputError` naming `what`."""
    try:
        value = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}.") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(value).__name__}.")
    return value


def result_document(result: Result) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "workflow": result.workflow,
        "outputs": result.outputs,
        "duration_ms": result.duration_ms,
    }


def info_document(info: WorkflowInfo, *, with_schema: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": info.name, "description": info.description, "tags": list(info.tags)}
    if with_schema:
        doc["input_schema"] = info.input_schema
    return doc


def as_plain(value: Any) -> Any:
    """Round-trip through JSON so frozen mappings, Decimals and the like become plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return orjson.loads(dumps(value))
