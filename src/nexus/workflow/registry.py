"""The node registry: type name -> node class, plus the `@node` decorator for plain functions.

Built-in IO nodes are listed by import path and imported on first lookup (at `build()`), so importing
`nexus.workflow` never pulls in a database or HTTP library.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from nexus.errors import WorkflowDefinitionError
from nexus.workflow.node import Node, Param, as_outputs, call_maybe_async, params_from_signature

NodeClass = TypeVar("NodeClass", bound=type[Node])
Function = TypeVar("Function", bound=Callable[..., Any])

BUILTIN_NODES: Mapping[str, str] = MappingProxyType(
    {
        "PythonCodeNode": "nexus.workflow.code:PythonCodeNode",
        "AsyncSQLDatabaseNode": "nexus.nodes.sql:AsyncSQLDatabaseNode",
        "HTTPRequestNode": "nexus.nodes.http:HTTPRequestNode",
        "TenantAssignmentNode": "nexus.nodes.tenant:TenantAssignmentNode",
    }
)

_registered: dict[str, type[Node]] = {}
_lock = threading.Lock()


def register_node(cls: NodeClass, type_name: str | None = None) -> NodeClass:
    """Register a `Node` subclass under `type_name` (default: its `type_name` or class name).

    Usable as a class decorator. Raises `WorkflowDefinitionError` if the name is taken.
    """
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise TypeError(f"{cls!r} is not a subclass of nexus.workflow.Node")
    if getattr(cls, "run", None) is None and cls.invoke is Node.invoke:
        raise TypeError(f"{cls.__qualname__} must define run()")
    name = type_name or cls.display_type()
    with _lock:
        existing = _registered.get(name)
        if existing is cls:
            return cls
        if existing is not None or name in BUILTIN_NODES:
            raise WorkflowDefinitionError(f"node type '{name}' is already registered")
        _registered[name] = cls
    return cls


def unregister_node(type_name: str) -> None:
    """Remove a registered node type; built-in types cannot be removed."""
    with _lock:
        if _registered.get(type_name) is None or type_name in BUILTIN_NODES:
            raise KeyError(type_name)
        del _registered[type_name]


def get_node_type(type_name: str) -> type[Node]:
    """Return the node class for `type_name`, importing a built-in on first use."""
    with _lock:
        found = _registered.get(type_name)
    if found is not None:
        return found
    target = BUILTIN_NODES.get(type_name)
    if target is None:
        known = ", ".join(node_types())
        raise WorkflowDefinitionError(f"unknown node type '{type_name}' (known: {known})")
    module_name, _, attribute = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except ImportError as exc:
        raise WorkflowDefinitionError(f"node type '{type_name}' cannot be loaded: {exc}") from exc
    with _lock:
        _registered.setdefault(type_name, cls)
    return cls  # type: ignore[no-any-return]  # the class at a built-in path is a Node subclass


def node_types() -> tuple[str, ...]:
    """Every type name that `get_node_type` resolves, sorted."""
    with _lock:
        return tuple(sorted(set(_registered) | set(BUILTIN_NODES)))


class FunctionNode(Node):
    """A node type made from a plain function by `@node`; see `node`."""

    function: ClassVar[Callable[..., Any]]
    takes_any: ClassVar[bool] = False

    def accepts(self, name: str) -> bool:
        return self.takes_any or name in self.input_specs()

    async def invoke(self, supplied: Mapping[str, Any], context: Mapping[str, Any]) -> Mapping[str, Any]:
        inputs = self.resolve_inputs(supplied, context)
        return as_outputs(await call_maybe_async(type(self).function, inputs, inline=self.pure))


def node(
    type_name: str | None = None,
    *,
    outputs: Sequence[str] = (),
    pure: bool = False,
    description: str | None = None,
) -> Callable[[Function], Function]:
    """Register a plain function (sync or async) as a node type and return it unchanged.

    Parameters come from the signature: annotations give types, defaults make inputs optional. A
    dict return is the outputs; any other value becomes `{"result": value}`. A sync function runs in
    a worker thread unless `pure=True`.
    """

    def register(function: Function) -> Function:
        params, takes_any = params_from_signature(function)
        name = type_name or function.__name__
        cls = type(
            name,
            (FunctionNode,),
            {
                "__doc__": description or function.__doc__,
                "__module__": function.__module__,
                "type_name": name,
                "parameters": MappingProxyType(params),
                "outputs": tuple(outputs),
                "pure": pure,
                "function": staticmethod(function),
                "takes_any": takes_any,
            },
        )
        register_node(cls)
        return function

    return register


__all__ = [
    "BUILTIN_NODES",
    "FunctionNode",
    "Param",
    "get_node_type",
    "node",
    "node_types",
    "register_node",
    "unregister_node",
]
