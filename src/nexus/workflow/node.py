"""The node contract: declared parameters and outputs, configuration checks, and how inputs are resolved.

A node is built once per workflow at `build()` and shared by every run, so it holds no per-run state.
Imports only the standard library and `nexus.errors`.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final

from nexus.errors import DeadlineExceededError, InvalidInputError, WorkflowDefinitionError
from nexus.workflow.template import fill_nested


class _Missing:
    """The type of `MISSING`: no default was given."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


class NodeTimeoutError(DeadlineExceededError):
    """A node ran past its timeout; `node_id` names it."""

    def __init__(self, message: str, *, node_id: str, **detail: Any) -> None:
        super().__init__(message, node_id=node_id, **detail)
        self.node_id = node_id


@dataclass(frozen=True, slots=True)
class Param:
    """One input of a node. A parameter with a default is optional unless `required` says otherwise."""

    type: Any = object
    default: Any = MISSING
    required: bool | None = None
    description: str | None = None

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is MISSING

    def accepts_value(self, value: Any) -> bool:
        """Check `value` against `type` when the type is a plain class; bool never passes as a number."""
        expected = typing.get_origin(self.type) or self.type
        if not isinstance(expected, type) or expected is object:
            return True
        if isinstance(value, bool) and expected in (int, float):
            return False
        if expected is float:
            return isinstance(value, int | float)
        return isinstance(value, expected)


def params_from_signature(function: Callable[..., Any]) -> tuple[dict[str, Param], bool]:
    """Derive parameters from a function's signature; the flag says it takes `**kwargs`."""
    hints = typing.get_type_hints(function)
    params: dict[str, Param] = {}
    takes_any = False
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            takes_any = True
        elif parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            raise TypeError(f"{function.__qualname__}: parameter '{name}' cannot be passed by keyword")
        else:
            default = MISSING if parameter.default is inspect.Parameter.empty else parameter.default
            params[name] = Param(hints.get(name, object), default=default)
    return params, takes_any


class Node:
    """Base of every node type.

    Subclasses declare `parameters` and `outputs` and implement `run(**inputs)`, sync or async. A
    sync `run` executes in a worker thread unless the class sets `pure = True` (fast, non-blocking
    code that may run on the event loop). Config keys that name a parameter give its static value,
    with `${name}` templates filled from the other inputs; `timeout` (seconds) bounds every run.
    """

    type_name: ClassVar[str | None] = None
    parameters: ClassVar[Mapping[str, Param]] = MappingProxyType({})
    outputs: ClassVar[tuple[str, ...]] = ()
    config_keys: ClassVar[frozenset[str]] = frozenset()
    default_timeout_s: ClassVar[float | None] = None
    pure: ClassVar[bool] = False
    run: Callable[..., Any]

    def __init__(self, node_id: str, config: Mapping[str, Any] | None = None) -> None:
        self.node_id = node_id
        self.config: Mapping[str, Any] = MappingProxyType(dict(config or {}))
        self.timeout_s = _parse_timeout(node_id, self.config.get("timeout", self.default_timeout_s))
        self.configure()
        unknown = sorted(set(self.config) - {"timeout"} - self.config_keys - set(self.input_specs()))
        if unknown:
            raise WorkflowDefinitionError(
                f"node '{node_id}' ({self.display_type()}): unknown config key(s) {', '.join(unknown)}",
                node_id=node_id,
            )

    @classmethod
    def display_type(cls) -> str:
        return cls.type_name or cls.__name__

    def configure(self) -> None:
        """Check and digest `self.config`; raise `WorkflowDefinitionError`, `ValueError` or `TypeError`."""

    def input_specs(self) -> Mapping[str, Param]:
        """The parameters of this node instance (some nodes derive them from their config)."""
        return self.parameters

    @property
    def runs_inline(self) -> bool:
        """`invoke` never suspends: it runs start to finish in the caller's task, so no timer is
        armed for it and its timeout is checked when it returns (it could not be interrupted)."""
        return False

    def output_names(self) -> tuple[str, ...]:
        """The declared outputs of this node instance; empty means undeclared (anything goes)."""
        return self.outputs

    def accepts(self, name: str) -> bool:
        """Say whether a flat workflow parameter called `name` reaches this node."""
        return name in self.input_specs()

    def resolve_inputs(self, supplied: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        """Merge defaults < config values < accepted supplied inputs, then check presence and types.

        Supplied values the node does not accept still serve config templates.
        """
        specs = self.input_specs()
        inputs = {name: spec.default for name, spec in specs.items() if spec.default is not MISSING}
        static = {name: value for name, value in self.config.items() if name in specs}
        if static:
            inputs.update(fill_nested(static, {**supplied, **context}, node_id=self.node_id))
        inputs.update({name: value for name, value in supplied.items() if self.accepts(name)})
        for name, spec in specs.items():
            if name not in inputs:
                if spec.is_required:
                    raise self.input_error(name, "required input is missing")
            elif not spec.accepts_value(inputs[name]):
                raise self.input_error(name, f"expected {_type_label(spec.type)}")
        return inputs

    def input_error(self, name: str, problem: str) -> InvalidInputError:
        return InvalidInputError(
            f"node '{self.node_id}': input '{name}': {problem}",
            node_id=self.node_id,
            errors=[{"path": name, "message": problem}],
        )

    async def invoke(self, supplied: Mapping[str, Any], context: Mapping[str, Any]) -> Mapping[str, Any]:
        """Run once with the inputs the runtime gathered; return the outputs."""
        inputs = self.resolve_inputs(supplied, context)
        return as_outputs(await call_maybe_async(self.run, inputs, inline=self.pure))

    @classmethod
    async def release_loop_resources(cls) -> None:
        """Close what this node type keeps per event loop (pools, clients) before that loop ends."""


async def call_maybe_async(function: Callable[..., Any], kwargs: Mapping[str, Any], *, inline: bool) -> Any:
    """Await an async function; run a sync one inline or in a worker thread so it cannot block the loop."""
    if inspect.iscoroutinefunction(function):
        return await function(**kwargs)
    if inline:
        result = function(**kwargs)
    else:
        result = await asyncio.to_thread(function, **kwargs)
    return await result if inspect.isawaitable(result) else result


def as_outputs(value: Any) -> Mapping[str, Any]:
    """A mapping is the outputs; any other value becomes `{"result": value}`."""
    return value if isinstance(value, Mapping) else {"result": value}


def _parse_timeout(node_id: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise WorkflowDefinitionError(
            f"node '{node_id}': timeout must be a positive number of seconds, not {value!r}", node_id=node_id
        )
    return float(value)


def _type_label(expected: Any) -> str:
    return getattr(expected, "__name__", str(expected))
