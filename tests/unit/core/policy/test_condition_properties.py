"""Properties of the condition language: it agrees with a reference evaluator and never fails oddly.

The reference below is written from the language's rules, on a tagged value model, apart from the
compiler's closures; random conditions are rendered to text, compiled and compared with it.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus.core.policy.condition import ConditionError, compile_condition

# --- A small AST of the language and its rendering -------------------------------------------------


@dataclass(frozen=True)
class Path:
    segments: tuple[str, ...]


@dataclass(frozen=True)
class Lit:
    value: Any
    text: str


@dataclass(frozen=True)
class Cmp:
    op: str
    left: Path | Lit
    right: Path | Lit


@dataclass(frozen=True)
class Between:
    x: Path | Lit
    low: Path | Lit
    high: Path | Lit


@dataclass(frozen=True)
class In:
    x: Path | Lit
    items: Path | tuple[Lit, ...]
    negated: bool


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class Junction:
    word: str  # "and" | "or"
    operands: tuple[Node, ...]


Node = Cmp | Between | In | Not | Junction
Operand = Path | Lit
BARE = ("current_time", "channel")


def render_operand(operand: Operand) -> str:
    if isinstance(operand, Lit):
        return operand.text
    if operand.segments[0] == "env" and operand.segments[1] in BARE and len(operand.segments) == 2:
        return operand.segments[1]
    return ".".join(operand.segments)


def render(node: Node) -> str:
    if isinstance(node, Cmp):
        return f"{render_operand(node.left)} {node.op} {render_operand(node.right)}"
    if isinstance(node, Between):
        return f"{render_operand(node.x)} between {render_operand(node.low)} and {render_operand(node.high)}"
    if isinstance(node, In):
        items = node.items
        source = render_operand(items) if isinstance(items, Path) else f"[{', '.join(i.text for i in items)}]"
        return f"{render_operand(node.x)} {'not in' if node.negated else 'in'} {source}"
    if isinstance(node, Not):
        inner = node.operand
        return f"not ({render(inner)})" if isinstance(inner, Junction) else f"not {render(inner)}"
    parts = []
    for operand in node.operands:
        text = render(operand)
        # Precedence is exercised: only an `or` inside an `and` gets parentheses.
        needs = isinstance(operand, Junction) and operand.word == "or" and node.word == "and"
        parts.append(f"({text})" if needs else text)
    return f" {node.word} ".join(parts)


# --- Strategies -------------------------------------------------------------------------------------

NAMES = ("a", "b")
STRINGS = ("", "3", "-2.5", "a", "US", "09:30", "23:00:00", "it's", 'say "hi"', "back\\slash", "x\ty")
TIMES = (time(0, 0), time(6, 0), time(9, 30), time(17, 0), time(22, 0), time(23, 59, 59))


def quote(text: str, mark: str) -> str:
    escaped = text.replace("\\", "\\\\").replace(mark, "\\" + mark)
    return f"{mark}{escaped}{mark}"


def time_text(value: time) -> str:
    return value.strftime("%H:%M") if value.second == 0 else value.strftime("%H:%M:%S")


paths = st.one_of(
    st.builds(
        lambda root, name: Path((root, name)),
        st.sampled_from(("user", "resource", "env")),
        st.sampled_from(NAMES),
    ),
    st.sampled_from(BARE).map(lambda name: Path(("env", name))),
    st.sampled_from((("user", "a", "b"), ("user", "b", "a"), ("resource", "a", "a"))).map(Path),
)


def quoted(text: str) -> st.SearchStrategy[Lit]:
    return st.sampled_from("'\"").map(lambda mark: Lit(text, quote(text, mark)))


numbers = st.one_of(
    st.integers(-3, 3).map(lambda n: Lit(n, str(n))),
    st.sampled_from(("2.5", "-0.5", "3.0", "10.25")).map(lambda t: Lit(float(t), t)),
)
clock_times = st.sampled_from(TIMES).map(lambda t: Lit(t, time_text(t)))
booleans = st.booleans().map(lambda b: Lit(b, str(b).lower()))
strings = st.sampled_from(STRINGS).flatmap(quoted)
literals = st.one_of(numbers, strings, booleans, clock_times)
operands = st.one_of(paths, literals)

# Any comparison at all, literals on every side included: the compiler must refuse exactly the undecidable.
comparisons = st.one_of(
    st.builds(Cmp, st.sampled_from(("==", "!=", "<", "<=", ">", ">=")), operands, operands),
    st.builds(Between, operands, operands, operands),
    st.builds(In, operands, paths | st.lists(literals, max_size=4).map(tuple), st.booleans()),
)


def either_way(comparison: Cmp, swap: bool) -> Cmp:
    return Cmp(comparison.op, comparison.right, comparison.left) if swap else comparison


def conditions_of(lits: st.SearchStrategy[Lit], ordered: st.SearchStrategy[Lit]) -> st.SearchStrategy[Node]:
    """Trees of comparisons that can mostly be decided against a context of the same family of values."""
    ops = paths | lits
    leaves = st.one_of(
        st.builds(either_way, st.builds(Cmp, st.sampled_from(("==", "!=")), paths, ops), st.booleans()),
        st.builds(
            either_way,
            st.builds(Cmp, st.sampled_from(("<", "<=", ">", ">=")), paths, paths | ordered),
            st.booleans(),
        ),
        st.builds(Between, paths | ordered, paths | ordered, paths | ordered),
        st.builds(In, ops, paths, st.booleans()),
        st.builds(In, paths, st.lists(lits, max_size=4).map(tuple), st.booleans()),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.builds(Not, inner),
            st.builds(
                Junction, st.sampled_from(("and", "or")), st.lists(inner, min_size=2, max_size=3).map(tuple)
            ),
        ),
        max_leaves=6,
    )


number_values = st.one_of(
    st.integers(-3, 3),
    st.sampled_from((2.5, -0.5, 3.0, 10.25, float("nan"), float("inf"))),
    st.sampled_from(("3", "-2.5", "10.25", "x", " 1")),
)
time_values = st.one_of(
    st.sampled_from(TIMES),
    st.sampled_from(TIMES).map(lambda t: datetime(2025, 1, 1, t.hour, t.minute, tzinfo=UTC)),
    st.sampled_from(TIMES).map(lambda t: t.replace(tzinfo=timezone(timedelta(hours=-3)))),
    st.sampled_from(TIMES).map(time_text),
)
other_values = st.one_of(st.none(), st.sampled_from(STRINGS), st.booleans())
scalars = st.one_of(number_values, time_values, other_values)


def values_of(family: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    collections = st.lists(family, max_size=3) | st.lists(family, max_size=3).map(tuple)
    return st.one_of(family, family, family, family, family, collections)


# A family: conditions whose literals are of one kind, and a context mostly holding values of that kind.
FAMILIES = {
    "numbers": (
        conditions_of(numbers | st.sampled_from(("3", "-2.5")).flatmap(quoted), numbers),
        values_of(number_values),
    ),
    "times": (
        conditions_of(clock_times | st.sampled_from(("09:30",)).flatmap(quoted), clock_times),
        values_of(time_values),
    ),
    "others": (conditions_of(strings | booleans, numbers | clock_times), values_of(other_values)),
    "mixed": (conditions_of(literals, numbers | clock_times), values_of(scalars)),
}


# --- The reference evaluator -------------------------------------------------------------------------

MISSING = ("missing", None)
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
CLOCK = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")
OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def tag(value: Any) -> tuple[str, Any]:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, datetime):
        return ("time", value.replace(tzinfo=None).time())
    if isinstance(value, time):
        return ("time", value.replace(tzinfo=None))
    return ("other", value)


def read_as(kind: str, text: str) -> Any:
    if kind == "num" and NUMBER.fullmatch(text):
        return float(text) if "." in text else int(text)
    if kind == "time" and (match := CLOCK.fullmatch(text)):
        hour, minute, second = (int(g or 0) for g in match.groups())
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second)
    return None


def lookup(context: dict[str, Any], path: Path) -> Any:
    node: Any = context
    for name in path.segments:
        node = node.get(name) if isinstance(node, dict) else None
    return node


def value_of(operand: Operand, context: dict[str, Any]) -> Any:
    return operand.value if isinstance(operand, Lit) else lookup(context, operand)


def unify(values: list[Any]) -> tuple[str, list[Any]] | None:
    tagged = [tag(v) for v in values]
    kinds = {k for k, _ in tagged}
    if kinds & {"missing", "other"}:
        return None
    if len(kinds) == 1:
        return kinds.pop(), [v for _, v in tagged]
    anchors = kinds - {"str"}
    if len(anchors) != 1 or anchors & {"bool"}:
        return None
    (kind,) = anchors
    coerced = [read_as(kind, v) if k == "str" else v for k, v in tagged]
    return None if any(v is None for v in coerced) else (kind, coerced)


def compare(op: str, a: Any, b: Any) -> bool | None:
    unified = unify([a, b])
    if unified is None or (op not in ("==", "!=") and unified[0] not in ("num", "time")):
        return None
    return bool(OPS[op](*unified[1]))


def between(x: Any, low: Any, high: Any) -> bool | None:
    unified = unify([x, low, high])
    if unified is None or unified[0] not in ("num", "time"):
        return None
    kind, (x, low, high) = unified
    if kind == "time" and low > high:
        return bool(x >= low or x <= high)
    return bool(low <= x <= high)


def any_of(results: list[bool | None]) -> bool | None:
    return True if True in results else None if None in results else False


def member(node: In, context: dict[str, Any]) -> bool | None:
    x = value_of(node.x, context)
    if isinstance(node.items, Path):
        items = lookup(context, node.items)
        if not isinstance(items, list | tuple | set | frozenset):
            return None
    else:
        items = [i.value for i in node.items]
    if tag(x)[0] in ("missing", "other"):
        return None
    found = any_of([compare("==", x, item) for item in items])
    return found if not node.negated or found is None else not found


def reference(node: Node, context: dict[str, Any]) -> bool | None:
    if isinstance(node, Cmp):
        return compare(node.op, value_of(node.left, context), value_of(node.right, context))
    if isinstance(node, Between):
        return between(*(value_of(o, context) for o in (node.x, node.low, node.high)))
    if isinstance(node, In):
        return member(node, context)
    if isinstance(node, Not):
        inner = reference(node.operand, context)
        return None if inner is None else not inner
    results = [reference(o, context) for o in node.operands]
    if node.word == "or":
        return any_of(results)
    return False if False in results else None if None in results else True


def literal_kinds(lit: Lit) -> set[str]:
    kind, value = tag(lit.value)
    if kind == "str":
        return {k for k in ("num", "time") if read_as(k, value) is not None}
    return {kind} & {"num", "time"}


def refused(node: Node) -> bool:
    """Whether the compiler must refuse `node`: a comparison that can never be decided."""
    if isinstance(node, Not):
        return refused(node.operand)
    if isinstance(node, Junction):
        return any(refused(o) for o in node.operands)
    empty: dict[str, Any] = {}
    if isinstance(node, Cmp | Between):
        operands = (node.left, node.right) if isinstance(node, Cmp) else (node.x, node.low, node.high)
        if isinstance(node, Between) or node.op not in ("==", "!="):
            possible = {"num", "time"}
            for lit in (o for o in operands if isinstance(o, Lit)):
                possible &= literal_kinds(lit)
            if not possible:
                return True
        return all(isinstance(o, Lit) for o in operands) and reference(node, empty) is None
    return isinstance(node.x, Lit) and isinstance(node.items, tuple) and reference(node, empty) is None


def paths_of(node: Node) -> set[Path]:
    if isinstance(node, Not):
        return paths_of(node.operand)
    if isinstance(node, Junction):
        return set().union(*(paths_of(o) for o in node.operands))
    fields = (
        [node.left, node.right]
        if isinstance(node, Cmp)
        else [node.x, node.low, node.high]
        if isinstance(node, Between)
        else [node.x, node.items]
    )
    return {f for f in fields if isinstance(f, Path)}


def build_context(node: Node, values: st.SearchStrategy[Any], data: st.DataObject) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for path in sorted(paths_of(node), key=lambda p: p.segments):
        if data.draw(st.sampled_from((False,) * 7 + (True,))):
            continue  # absent
        parent = context
        for name in path.segments[:-1]:
            child = parent.get(name)
            parent[name] = child = child if isinstance(child, dict) else {}
            parent = child
        parent[path.segments[-1]] = data.draw(values)
    return context


def check_against_reference(node: Node, values: st.SearchStrategy[Any], data: st.DataObject) -> None:
    text = render(node)
    try:
        condition = compile_condition(text)
    except ConditionError:
        assert refused(node), text
        return
    assert not refused(node), text
    assert condition.paths == {".".join(p.segments) for p in paths_of(node)}
    for _ in range(3):
        context = build_context(node, values, data)
        assert condition.evaluate(context) is reference(node, context), (text, context)
        absent = sorted(".".join(p.segments) for p in paths_of(node) if lookup(context, p) is None)
        assert list(condition.missing(context)) == absent


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(FAMILIES)), st.data())
def test_compiled_conditions_agree_with_the_reference_evaluator(family: str, data: st.DataObject) -> None:
    conditions, values = FAMILIES[family]
    check_against_reference(data.draw(conditions), values, data)


@settings(max_examples=300, deadline=None)
@given(comparisons, st.data())
def test_a_comparison_is_refused_exactly_when_it_can_never_be_decided(
    node: Node, data: st.DataObject
) -> None:
    check_against_reference(node, values_of(scalars), data)


# --- Arbitrary text compiles or fails with a ConditionError -------------------------------------------

TOKENS = (
    "user.a",
    "resource.b.c",
    "env.x",
    "current_time",
    "channel",
    "foo",
    "user",
    "and",
    "or",
    "not",
    "in",
    "between",
    "true",
    "false",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "=",
    "(",
    ")",
    "[",
    "]",
    ",",
    "'x'",
    '"y"',
    "'",
    "\\",
    "3",
    "-2.5",
    "09:00",
    "25:61",
    "1.",
    ".",
    "\n",
    "__class__",
    "@",
    "'a\\'b'",
)


def check_refusal_or_condition(text: str) -> None:
    try:
        condition = compile_condition(text)
    except ConditionError as refusal:
        error = refusal
    else:
        assert condition.text == text
        return
    assert 1 <= error.line <= text.count("\n") + 1
    assert error.column >= 1
    assert f"at line {error.line}, column {error.column}" in error.message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_arbitrary_text_compiles_or_raises_a_condition_error(text: str) -> None:
    check_refusal_or_condition(text)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=25), st.sampled_from((" ", "", "  \n ")))
def test_token_soup_compiles_or_raises_a_condition_error(tokens: list[str], separator: str) -> None:
    check_refusal_or_condition(separator.join(tokens))


# --- Evaluation never raises -----------------------------------------------------------------------------

SAMPLES = [
    compile_condition(text)
    for text in (
        "user.a == 1 or user.a != 'x' or user.a == true or user.a == 09:00",
        "user.a < 2 or user.a >= 2.5 or user.a <= 09:00 or user.a > '3'",
        "user.a between 1 and 2 or user.a between 22:00 and 06:00 or user.a between user.b and resource.a",
        "user.a in ['x', 1, true, 09:00] or user.a not in [] or 'x' in user.b or user.a in resource.a",
        "not (user.a.b.c == 1 and current_time between 09:00 and 17:00) or channel == 'api'",
        "user.b == resource.b and env.a == user.a",
    )
]

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.times(timezones=st.none() | st.just(UTC))
    | st.datetimes(timezones=st.none() | st.just(timezone(timedelta(hours=9))))
    | st.binary(max_size=4)
    | st.builds(object)
    | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
    | st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{1,5})?", fullmatch=True)
    | st.sampled_from(("09:00", "23:59:59", "24:00", "3", "1" * 5000)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.sampled_from(("a", "b", "c")) | st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(("user", "resource", "env", "other")), json_like, max_size=4) | json_like
)
def test_evaluation_never_raises_whatever_the_context_holds(context: Any) -> None:
    for condition in SAMPLES:
        assert condition.evaluate(context) in (True, False, None)
        assert set(condition.missing(context)) <= condition.paths
