"""The values of the condition language: coercion, comparison, membership and attribute reads.

Three-valued: an operation on a missing value or on kinds that do not meet is None (unknown).
Context values are read only through `Mapping.get`, never through attributes. Standard library only.
"""

from __future__ import annotations

import datetime as _dt
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

Getter = Callable[[Mapping[str, Any]], Any]


NUM, STR, BOOL, TIME = "number", "string", "boolean", "time"
KIND_OF: Final[dict[type, str]] = {int: NUM, float: NUM, str: STR, bool: BOOL, _dt.time: TIME}
ORDERED: Final = frozenset({NUM, TIME})
DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?")
COLLECTIONS: Final = (list, tuple, set, frozenset)


def as_number(text: str) -> int | float | None:
    if DECIMAL.fullmatch(text) is None:
        return None
    if "." in text:
        return float(text)
    try:
        return int(text)
    except ValueError:  # beyond int's digit limit
        return float(text)


def as_time(text: str) -> _dt.time | None:
    match = CLOCK.fullmatch(text)
    if match is None:
        return None
    hour, minute, second = match.groups()
    return _dt.time(int(hour), int(minute), int(second or 0))


COERCE: Final[dict[str, Callable[[str], Any]]] = {NUM: as_number, TIME: as_time}


def scalar(value: Any) -> Any:
    """Reduce a context value to an exact int, float, bool, str or naive time; anything else to None."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool:
        return value
    if kind is _dt.datetime:
        return value.time()
    if kind is _dt.time:
        return value if value.tzinfo is None else value.replace(tzinfo=None)
    if value is None:
        return None
    # Subclasses (IntEnum, StrEnum, ...) are read through the base type's slots: no user code runs.
    return scalar_subclass(value)


def scalar_subclass(value: Any) -> Any:
    kind = type(value)
    if issubclass(kind, str):
        return str.__str__(value)
    if issubclass(kind, int):
        return int.__int__(value)
    if issubclass(kind, float):
        return float.__float__(value)
    if issubclass(kind, _dt.datetime):
        return _dt.datetime.time(value)
    if issubclass(kind, _dt.time):
        return _dt.datetime.combine(_dt.date.min, value).time()
    return None


def members_of(value: Any) -> Iterable[Any] | None:
    kind = type(value)
    if kind in COLLECTIONS:
        return map(scalar, value)
    for base in COLLECTIONS:
        if issubclass(kind, base):
            return map(scalar, base.__iter__(value))
    return None


def compare(op: Callable[[Any, Any], bool], ordering: bool, a: Any, b: Any) -> bool | None:
    ka, kb = KIND_OF.get(type(a)), KIND_OF.get(type(b))
    if ka is None or kb is None:
        return None
    if ka != kb:
        if ka == STR and kb in COERCE:
            a, ka = COERCE[kb](a), kb
        elif kb == STR and ka in COERCE:
            b = COERCE[ka](b)
        else:
            return None
        if a is None or b is None:
            return None
    if ordering and ka not in ORDERED:
        return None
    return op(a, b)


def between(x: Any, low: Any, high: Any) -> bool | None:
    kind = KIND_OF.get(type(x))
    if kind is None or kind != KIND_OF.get(type(low)) or kind != KIND_OF.get(type(high)):
        return between_mixed(x, low, high)
    if kind not in ORDERED:
        return None
    if kind == TIME and low > high:
        return bool(x >= low or x <= high)
    return bool(low <= x <= high)


def between_mixed(x: Any, low: Any, high: Any) -> bool | None:
    kinds = [KIND_OF.get(type(v)) for v in (x, low, high)]
    anchors = {k for k in kinds if k != STR}
    if len(anchors) != 1 or not anchors <= ORDERED:  # also a missing or unsupported value (None)
        return None
    coerce = COERCE[anchors.pop()]  # type: ignore[index]  # anchors <= ORDERED: never None
    values = [coerce(v) if k == STR else v for v, k in zip((x, low, high), kinds, strict=True)]
    return None if any(v is None for v in values) else between(*values)


def member(x: Any, items: Iterable[Any] | None) -> bool | None:
    if x is None or items is None:
        return None
    found: bool | None = False
    for item in items:
        equal = compare(operator.eq, False, x, item)
        if equal:
            return True
        if equal is None:
            found = None
    return found


def walker(segments: tuple[str, ...]) -> Getter:
    def walk(context: Mapping[str, Any]) -> Any:
        node: Any = context
        try:
            for name in segments:
                if type(node) is dict or isinstance(node, Mapping):
                    node = node.get(name)
                else:
                    return None
        except Exception:  # noqa: BLE001  # a caller's Mapping may raise; what cannot be read is missing
            return None
        return node

    return walk
