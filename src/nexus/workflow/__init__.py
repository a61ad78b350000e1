"""Workflows: build a DAG of nodes once, run it many times.

Imports no web, CLI, MCP, database or telemetry library; built-in IO nodes load lazily by type name.
"""

from nexus.workflow.builder import WorkflowBuilder
from nexus.workflow.graph import Connection, Workflow
from nexus.workflow.node import MISSING, Node, NodeTimeoutError, Param
from nexus.workflow.registry import get_node_type, node, node_types, register_node, unregister_node
from nexus.workflow.runtime import AsyncLocalRuntime, LocalRuntime
from nexus.workflow.template import fill_template

__all__ = [
    "MISSING",
    "AsyncLocalRuntime",
    "Connection",
    "LocalRuntime",
    "Node",
    "NodeTimeoutError",
    "Param",
    "Workflow",
    "WorkflowBuilder",
    "fill_template",
    "get_node_type",
    "node",
    "node_types",
    "register_node",
    "unregister_node",
]
