"""`WorkflowBuilder`: collect nodes, connections and inputs, then check them all once in `build()`.

Every definition problem surfaces here as `WorkflowDefinitionError` naming the culprit, never
during a call.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Self

from nexus.errors import NexusError, WorkflowDefinitionError
from nexus.workflow.graph import Connection, Workflow
from nexus.workflow.inputs import InputSpec, InputValidator, build_schema, declare_input
from nexus.workflow.node import MISSING, Node
from nexus.workflow.registry import get_node_type


class WorkflowBuilder:
    """Describe a workflow step by step; every method returns the builder for chaining."""

    def __init__(self) -> None:
        self._nodes: list[tuple[str, str, Mapping[str, Any]]] = []
        self._connections: list[Connection] = []
        self._inputs: list[tuple[str, Any, bool, Any, str | None]] = []

    def add_node(self, type_name: str, node_id: str, config: Mapping[str, Any] | None = None) -> Self:
        """Add a node of a registered type; the config is checked by `build()`."""
        self._nodes.append((type_name, node_id, dict(config or {})))
        return self

    def add_connection(self, src: str, src_output: str, dst: str, dst_input: str) -> Self:
        """Feed `src`'s output (a dotted path like "result.items.0" selects inside it) to `dst_input`."""
        self._connections.append(Connection(src, src_output, dst, dst_input))
        return self

    def add_input(
        self,
        name: str,
        type: type | Mapping[str, Any],  # the public keyword is `type`, as documented
        *,
        required: bool = True,
        default: Any = MISSING,
        description: str | None = None,
    ) -> Self:
        """Declare a workflow input (a Python type or a JSON Schema dict); a default makes it optional."""
        self._inputs.append((name, type, required, default, description))
        return self

    def build(self) -> Workflow:
        """Check the whole definition and return an immutable `Workflow`."""
        nodes = self._build_nodes()
        self._check_connections(nodes)
        order = _topological_order(nodes, self._connections)
        specs = self._build_inputs(nodes)
        schema = build_schema(specs)
        incoming = {node_id: tuple(c for c in self._connections if c.dst == node_id) for node_id in nodes}
        return Workflow(
            nodes=MappingProxyType(nodes),
            connections=tuple(self._connections),
            inputs=specs,
            order=order,
            incoming=MappingProxyType(incoming),
            schema=schema,
            validator=InputValidator(specs, schema),
        )

    def _build_nodes(self) -> dict[str, Node]:
        nodes: dict[str, Node] = {}
        for type_name, node_id, config in self._nodes:
            if not isinstance(node_id, str) or not node_id:
                raise WorkflowDefinitionError(f"node id {node_id!r} must be a non-empty string")
            if node_id in nodes:
                raise WorkflowDefinitionError(f"duplicate node id '{node_id}'", node_id=node_id)
            cls = get_node_type(type_name)
            try:
                nodes[node_id] = cls(node_id, config)
            except NexusError:
                raise
            except (ValueError, TypeError) as exc:
                raise WorkflowDefinitionError(
                    f"node '{node_id}' ({type_name}): invalid config: {exc}", node_id=node_id
                ) from exc
        return nodes

    def _check_connections(self, nodes: Mapping[str, Node]) -> None:
        seen: set[tuple[str, str]] = set()
        for c in self._connections:
            label = f"connection {c.src}.{c.src_output} -> {c.dst}.{c.dst_input}"
            for end in (c.src, c.dst):
                if end not in nodes:
                    raise WorkflowDefinitionError(f"{label}: unknown node '{end}'", node_id=end)
            declared = nodes[c.src].output_names()
            if declared and c.output_name not in declared:
                raise WorkflowDefinitionError(
                    f"{label}: node '{c.src}' has no output '{c.output_name}' "
                    f"(outputs: {', '.join(declared)})",
                    node_id=c.src,
                )
            target = nodes[c.dst]
            if not target.accepts(c.dst_input):
                raise WorkflowDefinitionError(
                    f"{label}: node '{c.dst}' has no input '{c.dst_input}'", node_id=c.dst
                )
            if (c.dst, c.dst_input) in seen:
                raise WorkflowDefinitionError(
                    f"{label}: input '{c.dst_input}' is already connected", node_id=c.dst
                )
            seen.add((c.dst, c.dst_input))

    def _build_inputs(self, nodes: Mapping[str, Node]) -> tuple[InputSpec, ...]:
        specs: dict[str, InputSpec] = {}
        for name, kind, required, default, description in self._inputs:
            if name in specs:
                raise WorkflowDefinitionError(f"input '{name}' is declared twice")
            if name in nodes:
                # A dict under a node id targets that node, so an input of the same name would be ambiguous.
                raise WorkflowDefinitionError(f"input '{name}' has the same name as a node")
            specs[name] = declare_input(
                name, kind, required=required, default=default, description=description
            )
        return tuple(specs.values())


def _topological_order(nodes: Mapping[str, Node], connections: list[Connection]) -> tuple[str, ...]:
    """Kahn's algorithm, ties broken by insertion order; a leftover node means a cycle."""
    position = {node_id: index for index, node_id in enumerate(nodes)}
    downstream: dict[str, set[str]] = {node_id: set() for node_id in nodes}
    pending = dict.fromkeys(nodes, 0)
    for c in connections:
        if c.dst not in downstream[c.src]:
            downstream[c.src].add(c.dst)
            pending[c.dst] += 1
    ready = [(position[n], n) for n, count in pending.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, node_id = heapq.heappop(ready)
        order.append(node_id)
        for child in downstream[node_id]:
            pending[child] -= 1
            if pending[child] == 0:
                heapq.heappush(ready, (position[child], child))
    if len(order) < len(nodes):
        cyclic = [node_id for node_id in nodes if pending[node_id] > 0]
        raise WorkflowDefinitionError(f"cycle between nodes: {', '.join(cyclic)}", nodes=cyclic)
    return tuple(order)
