"""The immutable `Workflow`: built nodes, connections in topological order, and its input contract.

Built only by `WorkflowBuilder.build()`, which has already checked everything; shared by every run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nexus.workflow.inputs import InputSpec, InputValidator, thaw
from nexus.workflow.node import Node


@dataclass(frozen=True, slots=True)
class Connection:
    """`src_output` may be dotted: "result.items.0" selects inside the output "result"."""

    src: str
    src_output: str
    dst: str
    dst_input: str

    @property
    def output_name(self) -> str:
        return self.src_output.split(".", 1)[0]

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.src_output.split(".")[1:])

    def select(self, outputs: Mapping[str, Any]) -> Any:
        """Pick this connection's value out of the source node's outputs; `LookupError` if absent."""
        value: Any = outputs[self.output_name]
        for part in self.path:
            if isinstance(value, Mapping):
                value = value[part]
            elif isinstance(value, Sequence) and not isinstance(value, str | bytes) and _is_index(part):
                value = value[int(part)]
            else:
                raise KeyError(part)
        return value


def _is_index(part: str) -> bool:
    return part.isdigit() or (part.startswith("-") and part[1:].isdigit())


@dataclass(frozen=True, slots=True)
class Workflow:
    """A validated DAG of nodes. `order` is a topological order; `incoming` maps node id -> connections."""

    nodes: Mapping[str, Node]
    connections: tuple[Connection, ...]
    inputs: tuple[InputSpec, ...]
    order: tuple[str, ...]
    incoming: Mapping[str, tuple[Connection, ...]]
    schema: Mapping[str, Any] = field(repr=False)
    validator: InputValidator = field(repr=False, compare=False)

    @property
    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of the inputs, as a fresh dict the caller may keep."""
        return copy.deepcopy(thaw(self.schema))

    @property
    def declares_inputs(self) -> bool:
        return bool(self.inputs)

    def validate_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Apply defaults and check `inputs`; raises `InvalidInputError` with `errors=[{path, message}]`."""
        return self.validator.validate(inputs)

    def upstream(self, node_id: str) -> frozenset[str]:
        return frozenset(connection.src for connection in self.incoming[node_id])
