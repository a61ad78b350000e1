"""`${name}` templates in node configuration, filled from a node's inputs and context.

Plain mode substitutes any value as text; identifier mode (for SQL text) admits only values
matching `IDENTIFIER`, so a template can name a table or schema but never smuggle SQL in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from nexus.errors import InvalidInputError

TEMPLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def template_names(text: str) -> tuple[str, ...]:
    """Return the names of the templates in `text`, in order, without repeats."""
    return tuple(dict.fromkeys(TEMPLATE.findall(text)))


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None


def fill_template(
    text: str,
    values: Mapping[str, Any],
    *,
    identifiers_only: bool = False,
    encode: Callable[[str], str] | None = None,
    node_id: str | None = None,
) -> str:
    """Replace every `${name}` in `text` with `values[name]`.

    Raises:
        InvalidInputError: a name has no value, or (with `identifiers_only`) a value is not an
            identifier; raised before the text is used for anything. `node_id` names the culprit.
    """
    where = f"node '{node_id}': " if node_id is not None else ""
    detail = {"node_id": node_id} if node_id is not None else {}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise InvalidInputError(
                f"{where}template '${{{name}}}' has no value",
                errors=[{"path": name, "message": "required by a template"}],
                **detail,
            )
        value = values[name]
        if identifiers_only and not is_identifier(value):
            raise InvalidInputError(
                f"{where}template '${{{name}}}' in SQL accepts only an identifier "
                f"matching {IDENTIFIER.pattern}",
                errors=[{"path": name, "message": f"must match {IDENTIFIER.pattern}"}],
                **detail,
            )
        text_value = value if isinstance(value, str) else str(value)
        return encode(text_value) if encode is not None else text_value

    return TEMPLATE.sub(substitute, text)


def fill_nested(value: Any, values: Mapping[str, Any], *, node_id: str | None = None) -> Any:
    """Fill templates in every string inside a JSON-like value (dicts, lists, strings).

    A string that is exactly one template takes the value itself, so `"${limit}"` stays a number.
    """
    if isinstance(value, str):
        whole = TEMPLATE.fullmatch(value)
        if whole is not None and whole.group(1) in values:
            return values[whole.group(1)]
        return fill_template(value, values, node_id=node_id)
    if isinstance(value, Mapping):
        return {key: fill_nested(item, values, node_id=node_id) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [fill_nested(item, values, node_id=node_id) for item in value]
    return value


def nested_template_names(value: Any) -> tuple[str, ...]:
    """Return the template names in every string inside a JSON-like value."""
    if isinstance(value, str):
        return template_names(value)
    items: list[Any]
    if isinstance(value, Mapping):
        items = list(value.values())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return ()
    found: dict[str, None] = {}
    for item in items:
        found.update(dict.fromkeys(nested_template_names(item)))
    return tuple(found)
