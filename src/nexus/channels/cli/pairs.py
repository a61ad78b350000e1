"""`key=value` options (`-p`, `--attr`, `--attribute`): one reading for every command that takes them.

`-p key:=<json>` (HTTPie's spelling) gives a typed value for an input the workflow does not declare.
Imports only the CLI's problem module and orjson, so light commands stay light.
"""

from __future__ import annotations

from typing import Any

import orjson

from nexus.channels.cli.problem import Failure
from nexus.errors import InvalidInputError

USAGE = InvalidInputError.exit_code


def parse_pairs(pairs: list[str], *, what: str, option: str) -> dict[str, str]:
    """The pairs as a dict of raw strings; a pair without `=` or a key given twice is a usage error."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Failure(f"Invalid {what}", f"{pair!r}: expected {option} key=value.", USAGE)
        if key in found:
            raise Failure(f"Invalid {what}", f"{key!r} is given more than once.", USAGE)
        found[key] = value
    return found


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`-p key=value` (a raw string the server coerces by the input schema) and `-p key:=<json>`
    (the JSON value itself: `count:=3`, `tags:='["a"]'`, for inputs no schema describes)."""
    found = parse_pairs(pairs, what="parameter", option="-p")
    params: dict[str, Any] = {}
    for key, value in found.items():
        if not key.endswith(":"):
            params[key] = value
            continue
        name = key[:-1]
        if not name:
            raise Failure("Invalid parameter", f"{key}={value[:64]}: expected -p key:=<json>.", USAGE)
        if name in found or name in params:
            raise Failure("Invalid parameter", f"{name!r} is given more than once.", USAGE)
        try:
            params[name] = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise Failure(
                "Invalid parameter", f"{name}:= takes a JSON value, got {value[:64]!r}.", USAGE
            ) from None
    return params
