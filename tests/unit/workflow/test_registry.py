"""The node registry: class and decorator APIs, duplicates, lazy built-ins, a cheap import."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from nexus.errors import WorkflowDefinitionError
from nexus.workflow import (
    AsyncLocalRuntime,
    Node,
    Param,
    WorkflowBuilder,
    get_node_type,
    node,
    node_types,
    register_node,
    unregister_node,
)


@pytest.fixture
def registered() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        unregister_node(name)


class Scale(Node):
    type_name = "TestScale"
    parameters: ClassVar[dict[str, Param]] = {"value": Param(float), "factor": Param(float, default=2.0)}
    outputs = ("scaled",)
    pure = True

    def run(self, value: float, factor: float) -> dict[str, float]:
        return {"scaled": value * factor}


async def test_custom_node_class_is_usable_by_type_name(registered: list[str]) -> None:
    register_node(Scale)
    registered.append("TestScale")
    workflow = (
        WorkflowBuilder()
        .add_node("TestScale", "double", {"factor": 2})
        .add_node("TestScale", "again", {})
        .add_connection("double", "scaled", "again", "value")
        .build()
    )
    results, _ = await AsyncLocalRuntime().execute(workflow, {"double": {"value": 1.5}})
    assert results == {"double": {"scaled": 3.0}, "again": {"scaled": 6.0}}


def test_connection_from_an_undeclared_output_of_a_custom_node_is_rejected(registered: list[str]) -> None:
    register_node(Scale)
    registered.append("TestScale")
    builder = (
        WorkflowBuilder()
        .add_node("TestScale", "a")
        .add_node("TestScale", "b")
        .add_connection("a", "result", "b", "value")
    )
    with pytest.raises(
        WorkflowDefinitionError, match="node 'a' has no output 'result' \\(outputs: scaled\\)"
    ):
        builder.build()


async def test_async_custom_node_and_missing_declared_output(registered: list[str]) -> None:
    class Lying(Node):
        type_name = "TestLying"
        outputs = ("promised",)

        async def run(self) -> dict[str, Any]:
            return {"other": 1}

    register_node(Lying)
    registered.append("TestLying")
    from nexus.errors import WorkflowFailedError

    workflow = WorkflowBuilder().add_node("TestLying", "liar").build()
    with pytest.raises(
        WorkflowFailedError, match="node 'liar' failed: declared output\\(s\\) missing: promised"
    ):
        await AsyncLocalRuntime().execute(workflow)


async def test_decorated_function_becomes_a_node_type(registered: list[str]) -> None:
    @node("TestAdd", outputs=("sum",))
    async def add(a: int, b: int = 10) -> dict[str, int]:
        return {"sum": a + b}

    registered.append("TestAdd")
    assert await add(1, 2) == {"sum": 3}
    workflow = WorkflowBuilder().add_node("TestAdd", "plus").build()
    results, _ = await AsyncLocalRuntime().execute(workflow, {"a": 5})
    assert results == {"plus": {"sum": 15}}
    spec = get_node_type("TestAdd").parameters
    assert spec["a"].is_required
    assert spec["a"].type is int
    assert not spec["b"].is_required


async def test_decorated_sync_function_non_dict_return_is_result(registered: list[str]) -> None:
    @node("TestUpper")
    def upper(text: str) -> str:
        return text.upper()

    registered.append("TestUpper")
    workflow = WorkflowBuilder().add_node("TestUpper", "u").build()
    assert (await AsyncLocalRuntime().execute(workflow, {"text": "abc"}))[0] == {"u": {"result": "ABC"}}


def test_registering_a_taken_type_name_is_an_error(registered: list[str]) -> None:
    register_node(Scale)
    registered.append("TestScale")
    assert register_node(Scale) is Scale

    class Other(Scale):
        pass

    with pytest.raises(WorkflowDefinitionError, match="node type 'TestScale' is already registered"):
        register_node(Other)
    with pytest.raises(WorkflowDefinitionError, match="node type 'HTTPRequestNode' is already registered"):
        register_node(Other, "HTTPRequestNode")

    with pytest.raises(WorkflowDefinitionError, match="already registered"):

        @node("TestScale")
        def clash() -> None:
            return None


def test_node_class_without_run_cannot_be_registered() -> None:
    class Empty(Node):
        type_name = "TestEmpty"

    with pytest.raises(TypeError, match="must define run"):
        register_node(Empty)


def test_built_in_types_resolve_lazily_to_their_modules() -> None:
    assert {"AsyncSQLDatabaseNode", "HTTPRequestNode", "PythonCodeNode"} <= set(node_types())
    assert get_node_type("AsyncSQLDatabaseNode").__module__ == "nexus.nodes.sql"
    assert get_node_type("HTTPRequestNode").__module__ == "nexus.nodes.http"


def test_unknown_type_error_lists_the_known_ones() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"unknown node type 'Nope' \(known: .*PythonCodeNode"):
        get_node_type("Nope")


def test_importing_nexus_workflow_loads_no_io_or_schema_library() -> None:
    probe = (
        "import sys, nexus.workflow\n"
        "heavy = [m for m in ('sqlalchemy', 'httpx2', 'jsonschema', 'nexus.nodes.sql') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    # Fixed argv: this interpreter and a constant probe script.
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
