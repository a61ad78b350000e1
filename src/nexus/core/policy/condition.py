"""The ABAC condition language: parse and compile a condition once, evaluate it per request.

Evaluation is three-valued and reads context values only through `Mapping.get`, never attributes.
Imports lark, the standard library, its sibling `value` (the semantics of values) and errors.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from nexus.core.policy.value import (
    COERCE,
    KIND_OF,
    ORDERED,
    STR,
    Getter,
    as_number,
    as_time,
    between,
    compare,
    member,
    members_of,
    scalar,
    walker,
)
from nexus.errors import ConfigurationError

MAX_CONDITION_CHARS: Final = 4096
MAX_NESTING: Final = 32
MAX_LIST_ITEMS: Final = 1000
ROOTS: Final = ("user", "resource", "env")
ENV_NAMES: Final = ("current_time", "current_day", "channel", "client_address")

_Test = Callable[[Mapping[str, Any]], bool | None]


class ConditionError(ConfigurationError):
    """A condition that cannot be compiled; `line` and `column` (1-based) locate the fault."""

    def __init__(self, problem: str, *, line: int, column: int, hint: str = "") -> None:
        where = f"{problem} at line {line}, column {column}"
        super().__init__(f"{where}: {hint}" if hint else where, line=line, column=column)
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Condition:
    """A compiled condition; `paths` are the attributes it reads, as `root.name[.name...]`.

    `evaluate` answers True, False or None (unknown) in Kleene logic. A comparison is unknown when an
    operand is missing (absent or None) or the types do not meet: numbers compare with numbers (a
    str that reads as a decimal is coerced), times with times (a str `HH:MM[:SS]` is coerced),
    strings and booleans only by equality. `x in list` is the Kleene `or` of `x == item`, so
    `3 in ['3']` holds. `between` is inclusive and wraps over midnight for times when A > B.
    """

    text: str
    paths: frozenset[str]
    _test: _Test = field(repr=False, compare=False)

    def evaluate(self, context: Mapping[str, Any]) -> bool | None:
        """Decide the condition for one request; never raises, whatever the context holds."""
        return self._test(context)

    def missing(self, context: Mapping[str, Any]) -> tuple[str, ...]:
        """Name the referenced paths that the context lacks (absent or None), sorted."""
        return tuple(p for p in sorted(self.paths) if walker(tuple(p.split(".")))(context) is None)


def compile_condition(text: str) -> Condition:
    """Parse and compile `text`; raise `ConditionError` naming the line and column of any fault."""
    if not isinstance(text, str):
        raise ConditionError(f"a condition must be a string, not {type(text).__name__}", line=1, column=1)
    if len(text) > MAX_CONDITION_CHARS:
        line, column = _position(text, MAX_CONDITION_CHARS)
        raise ConditionError(
            f"condition longer than {MAX_CONDITION_CHARS} characters", line=line, column=column
        )
    return _compile_text(text)


@functools.lru_cache(maxsize=1024)
def _compile_text(text: str) -> Condition:
    tree = _parse(text)
    _check_nesting(tree)
    paths: set[str] = set()
    test = _compile(tree, paths)
    return Condition(text, frozenset(paths), test)


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


# --- Syntax -------------------------------------------------------------------------------------

_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr ("or" and_expr)*
?and_expr: not_expr ("and" not_expr)*
?not_expr: NOT not_expr -> negation
         | atom
?atom: operand CMP operand -> compare
     | operand "in" collection -> member
     | operand NOT "in" collection -> non_member
     | operand "between" operand "and" operand -> between
     | LPAR or_expr ")" -> group
?operand: PATH -> path
        | literal
?literal: STRING -> string
        | NUMBER -> number
        | TIME -> time
        | TRUE -> true
        | FALSE -> false
?collection: PATH -> path
           | LSQB (literal ("," literal)*)? "]" -> list
NOT: "not"
TRUE: "true"
FALSE: "false"
LPAR: "("
LSQB: "["
CMP: "==" | "!=" | "<=" | ">=" | "<" | ">"
PATH: /[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*/
STRING: /'(?:[^'\\\n]|\\['"\\])*'/ | /"(?:[^"\\\n]|\\['"\\])*"/
NUMBER: /-?[0-9]+(\.[0-9]+)?/
TIME.2: /[0-9]{2}:[0-9]{2}(:[0-9]{2})?/
%ignore /[ \t\r\n]+/
"""

_WORDS: Final = {
    "PATH": "an attribute such as user.department",
    "STRING": "a quoted string",
    "NUMBER": "a number",
    "TIME": "a time such as 09:00",
    "CMP": "a comparison (==, !=, <, <=, >, >=)",
    "$END": "the end of the condition",
}


@functools.cache
def _parser() -> Lark:
    # The basic lexer keeps keywords reserved everywhere: `user.x == and` is a syntax error, not a path.
    return Lark(_GRAMMAR, parser="lalr", lexer="basic", maybe_placeholders=False)


def _parse(text: str) -> Tree[Token]:
    try:
        return _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc) from exc


def _syntax_error(exc: UnexpectedInput) -> ConditionError:
    hint = _expected(exc)
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        end = exc.token  # borrows the position of the last token, or has none when the text is blank
        line, column = (end.end_line, end.end_column) if end.end_line else (1, 1)
        return ConditionError("unexpected end of condition", line=line, column=column or 1, hint=hint)
    if isinstance(exc, UnexpectedToken):
        return _fault(exc.token, f"unexpected {exc.token.value!r}", hint)
    if isinstance(exc, UnexpectedCharacters):
        return ConditionError(
            f"unexpected character {exc.char!r}", line=exc.line, column=exc.column, hint=hint
        )
    return ConditionError("invalid condition", line=max(exc.line, 1), column=max(exc.column, 1), hint=hint)


def _expected(exc: UnexpectedInput) -> str:
    interactive = getattr(exc, "interactive_parser", None)
    names: Iterable[str] = interactive.accepts() if interactive is not None else ()
    terminals = {t.name: t for t in _parser().terminals}
    words = set()
    for name in names:
        term = terminals.get(name)
        if name in _WORDS or term is None:
            words.add(_WORDS.get(name, name))
        else:
            words.add(f"'{term.pattern.value}'")
    ordered = sorted(words)
    if len(ordered) <= 1:
        return f"expected {ordered[0]}" if ordered else ""
    return f"expected {', '.join(ordered[:-1])} or {ordered[-1]}"


def _check_nesting(tree: Tree[Token]) -> None:
    # Iterative, so no input can reach Python's recursion limit; compiling then recurses boundedly.
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in ("group", "negation"):
            depth += 1
            if depth > MAX_NESTING:
                raise _fault(_leaf(node), f"nesting deeper than {MAX_NESTING} levels")
        stack.extend((child, depth) for child in node.children if isinstance(child, Tree))


# --- Compilation --------------------------------------------------------------------------------

_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class _Operand:
    get: Getter
    token: Token
    literal: bool = False
    value: Any = None


def _compile(node: Tree[Token], paths: set[str]) -> _Test:
    rule = node.data
    if rule == "or_expr":
        return _any_of([_compile(_tree(c), paths) for c in node.children])
    if rule == "and_expr":
        return _all_of([_compile(_tree(c), paths) for c in node.children])
    if rule == "negation":
        return _negate(_compile(_tree(node.children[1]), paths))
    if rule == "group":
        return _compile(_tree(node.children[1]), paths)
    if rule == "compare":
        return _compile_compare(node, paths)
    if rule == "between":
        return _compile_between(node, paths)
    return _compile_member(node, paths)


def _tree(child: Tree[Token] | Token) -> Tree[Token]:
    return cast(Tree[Token], child)  # the grammar puts a rule (never a token) at every place this reads


def _any_of(tests: list[_Test]) -> _Test:
    def disjunction(context: Mapping[str, Any]) -> bool | None:
        unknown = False
        for test in tests:
            result = test(context)
            if result is True:
                return True
            if result is None:
                unknown = True
        return None if unknown else False

    return disjunction


def _all_of(tests: list[_Test]) -> _Test:
    def conjunction(context: Mapping[str, Any]) -> bool | None:
        unknown = False
        for test in tests:
            result = test(context)
            if result is False:
                return False
            if result is None:
                unknown = True
        return None if unknown else True

    return conjunction


def _negate(test: _Test) -> _Test:
    def negation(context: Mapping[str, Any]) -> bool | None:
        result = test(context)
        return None if result is None else not result

    return negation


def _compile_compare(node: Tree[Token], paths: set[str]) -> _Test:
    left, _, right = node.children
    op_token = _leaf(node, 1)
    a, b = _operand(_tree(left), paths), _operand(_tree(right), paths)
    ordering = op_token.value not in ("==", "!=")
    if ordering:
        _require_orderable((a, b))
    return _bind(functools.partial(compare, _OPS[op_token.value], ordering), (a, b))


def _compile_between(node: Tree[Token], paths: set[str]) -> _Test:
    operands = tuple(_operand(_tree(c), paths) for c in node.children)
    _require_orderable(operands)
    return _bind(between, operands)


def _compile_member(node: Tree[Token], paths: set[str]) -> _Test:
    x = _operand(_tree(node.children[0]), paths)
    source = _tree(node.children[-1])
    if source.data == "path":
        walk = walker(_path(source, paths))
        items = _Operand(lambda context: members_of(walk(context)), _leaf(source))
    else:
        values = tuple(_literal(_tree(c)) for c in source.children[1:])
        if len(values) > MAX_LIST_ITEMS:
            raise _fault(_leaf(source), f"list longer than {MAX_LIST_ITEMS} items")
        items = _Operand(lambda context: values, _leaf(source), literal=True, value=values)
    test = _bind(member, (x, items))
    return _negate(test) if node.data == "non_member" else test


def _bind(test: Callable[..., bool | None], operands: tuple[_Operand, ...]) -> _Test:
    if all(o.literal for o in operands):
        result = test(*(o.value for o in operands))
        if result is None:
            raise _fault(operands[0].token, "these values cannot be compared", _kinds(operands))
        return lambda context: result
    if len(operands) == 3 and operands[1].literal and operands[2].literal:
        get, low, high = operands[0].get, operands[1].value, operands[2].value
        return lambda context: test(get(context), low, high)
    if len(operands) == 2:
        (get_a, get_b), (lit_a, lit_b) = (o.get for o in operands), (o.literal for o in operands)
        if lit_b:
            value_b = operands[1].value
            return lambda context: test(get_a(context), value_b)
        if lit_a:
            value_a = operands[0].value
            return lambda context: test(value_a, get_b(context))
        return lambda context: test(get_a(context), get_b(context))
    getters = tuple(o.get for o in operands)
    return lambda context: test(*[get(context) for get in getters])


def _kinds(operands: tuple[_Operand, ...]) -> str:
    kinds = (KIND_OF.get(type(o.value)) for o in operands)
    return " with ".join(
        f"{k} {o.token.value}" if k else "a list" for k, o in zip(kinds, operands, strict=True)
    )


def _require_orderable(operands: tuple[_Operand, ...]) -> None:
    possible = set(ORDERED)
    for operand in operands:
        if operand.literal:
            value, kind = operand.value, KIND_OF[type(operand.value)]
            possible &= {k for k in ORDERED if COERCE[k](value) is not None} if kind == STR else {kind}
        if not possible:
            hint = "<, <=, >, >= and between take numbers or times, all of one kind"
            raise _fault(operand.token, f"{operand.token.value} cannot be ordered here", hint)


def _operand(node: Tree[Token], paths: set[str]) -> _Operand:
    if node.data == "path":
        walk = walker(_path(node, paths))
        return _Operand(lambda context: scalar(walk(context)), _leaf(node))
    value = _literal(node)
    return _Operand(lambda context: value, _leaf(node), literal=True, value=value)


def _literal(node: Tree[Token]) -> Any:
    token = _leaf(node)
    if node.data == "string":
        return re.sub(r"\\(.)", r"\1", token.value[1:-1])
    if node.data == "number":
        return as_number(token.value)
    if node.data == "time":
        value = as_time(token.value)
        if value is None:
            raise _fault(token, f"invalid time {token.value}", "times run from 00:00 to 23:59:59")
        return value
    return node.data == "true"


def _path(node: Tree[Token], paths: set[str]) -> tuple[str, ...]:
    token = _leaf(node)
    segments = tuple(token.value.split("."))
    if segments[0] in ENV_NAMES:
        segments = ("env", *segments)
    elif segments[0] not in ROOTS or len(segments) < 2:
        hint = f"expected user.<name>, resource.<name>, env.<name> or one of {', '.join(ENV_NAMES)}"
        raise _fault(token, f"unknown name {token.value!r}", hint)
    paths.add(".".join(segments))
    return segments


def _fault(token: Token, problem: str, hint: str = "") -> ConditionError:
    return ConditionError(problem, line=token.line or 1, column=token.column or 1, hint=hint)


def _leaf(node: Tree[Token], index: int = 0) -> Token:
    return cast(Token, node.children[index])  # named terminals: PATH, literals, LSQB, LPAR, NOT, CMP
