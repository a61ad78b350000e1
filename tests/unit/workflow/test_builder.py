"""WorkflowBuilder: every definition problem is a WorkflowDefinitionError naming the culprit."""

from __future__ import annotations

import dataclasses

import pytest

from nexus.errors import WorkflowDefinitionError
from nexus.workflow import WorkflowBuilder


def code(source: str = "result = 1") -> dict[str, str]:
    return {"code": source}


def test_builder_methods_chain_and_build_an_immutable_workflow() -> None:
    builder = WorkflowBuilder()
    assert builder.add_node("PythonCodeNode", "a", code()) is builder
    assert builder.add_node("PythonCodeNode", "b", code("result = x")) is builder
    assert builder.add_connection("a", "result", "b", "x") is builder
    assert builder.add_input("n", int, default=1) is builder
    workflow = builder.build()
    assert workflow.order == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        workflow.order = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        workflow.nodes["c"] = workflow.nodes["a"]  # type: ignore[index]


def test_unknown_node_type_is_named() -> None:
    with pytest.raises(WorkflowDefinitionError, match="unknown node type 'NoSuchNode'"):
        WorkflowBuilder().add_node("NoSuchNode", "a").build()


def test_duplicate_node_id_is_named() -> None:
    builder = (
        WorkflowBuilder().add_node("PythonCodeNode", "a", code()).add_node("PythonCodeNode", "a", code())
    )
    with pytest.raises(WorkflowDefinitionError, match="duplicate node id 'a'") as caught:
        builder.build()
    assert caught.value.detail["node_id"] == "a"


def test_cycle_names_the_nodes_in_it() -> None:
    builder = (
        WorkflowBuilder()
        .add_node("PythonCodeNode", "start", code())
        .add_node("PythonCodeNode", "x", code("result = a"))
        .add_node("PythonCodeNode", "y", code("result = b"))
        .add_connection("x", "result", "y", "b")
        .add_connection("y", "result", "x", "a")
    )
    with pytest.raises(WorkflowDefinitionError, match="cycle between nodes: x, y") as caught:
        builder.build()
    assert caught.value.detail["nodes"] == ["x", "y"]


def test_self_loop_is_a_cycle() -> None:
    builder = WorkflowBuilder().add_node("PythonCodeNode", "x", code("result = a"))
    with pytest.raises(WorkflowDefinitionError, match="cycle between nodes: x"):
        builder.add_connection("x", "result", "x", "a").build()


@pytest.mark.parametrize(("src", "dst", "missing"), [("ghost", "b", "ghost"), ("a", "phantom", "phantom")])
def test_connection_to_an_unknown_node_names_it(src: str, dst: str, missing: str) -> None:
    builder = (
        WorkflowBuilder()
        .add_node("PythonCodeNode", "a", code())
        .add_node("PythonCodeNode", "b", code("result = x"))
        .add_connection(src, "result", dst, "x")
    )
    with pytest.raises(WorkflowDefinitionError, match=f"unknown node '{missing}'"):
        builder.build()


def test_connection_from_an_undeclared_output_names_node_and_output() -> None:
    builder = (
        WorkflowBuilder()
        .add_node("PythonCodeNode", "a", code())
        .add_node("PythonCodeNode", "b", code("result = x"))
        .add_connection("a", "rows.0", "b", "x")
    )
    with pytest.raises(WorkflowDefinitionError, match="node 'a' has no output 'rows'"):
        builder.build()


def test_connection_into_an_unknown_input_names_node_and_input() -> None:
    def double(x: int) -> int:
        return x * 2

    builder = (
        WorkflowBuilder()
        .add_node("PythonCodeNode", "a", code())
        .add_node("PythonCodeNode", "b", {"function": double})
        .add_connection("a", "result", "b", "y")
    )
    with pytest.raises(WorkflowDefinitionError, match="node 'b' has no input 'y'"):
        builder.build()


def test_two_connections_into_one_input_are_rejected() -> None:
    builder = (
        WorkflowBuilder()
        .add_node("PythonCodeNode", "a", code())
        .add_node("PythonCodeNode", "b", code())
        .add_node("PythonCodeNode", "c", code("result = x"))
        .add_connection("a", "result", "c", "x")
        .add_connection("b", "result", "c", "x")
    )
    with pytest.raises(WorkflowDefinitionError, match="input 'x' is already connected"):
        builder.build()


def test_unknown_config_key_is_named() -> None:
    builder = WorkflowBuilder().add_node("PythonCodeNode", "a", {"code": "result = 1", "retries": 3})
    with pytest.raises(WorkflowDefinitionError, match=r"node 'a' .*unknown config key.*retries"):
        builder.build()


@pytest.mark.parametrize("timeout", [0, -1, "10", True])
def test_invalid_timeout_is_rejected_with_the_node(timeout: object) -> None:
    builder = WorkflowBuilder().add_node("PythonCodeNode", "slow", {"code": "result = 1", "timeout": timeout})
    with pytest.raises(WorkflowDefinitionError, match="node 'slow': timeout must be a positive number"):
        builder.build()


def test_code_syntax_error_names_node_and_line() -> None:
    builder = WorkflowBuilder().add_node("PythonCodeNode", "calc", {"code": "x = 1\nresult = (x +\n"})
    with pytest.raises(
        WorkflowDefinitionError, match=r"node 'calc': syntax error in code at line \d"
    ) as caught:
        builder.build()
    assert caught.value.detail["line"] >= 2


def test_code_node_needs_exactly_one_of_code_and_function() -> None:
    both = WorkflowBuilder().add_node("PythonCodeNode", "a", {"code": "result = 1", "function": print})
    with pytest.raises(WorkflowDefinitionError, match="exactly one of 'code' or 'function'"):
        both.build()
    with pytest.raises(WorkflowDefinitionError, match="exactly one of 'code' or 'function'"):
        WorkflowBuilder().add_node("PythonCodeNode", "a", {}).build()


def test_signature_a_node_cannot_call_is_an_invalid_config() -> None:
    def positional(x: int, /) -> int:
        return x

    builder = WorkflowBuilder().add_node("PythonCodeNode", "p", {"function": positional})
    with pytest.raises(
        WorkflowDefinitionError, match=r"node 'p' .*invalid config.*cannot be passed by keyword"
    ):
        builder.build()


def test_input_with_the_name_of_a_node_is_ambiguous() -> None:
    builder = WorkflowBuilder().add_node("PythonCodeNode", "a", code()).add_input("a", dict)
    with pytest.raises(WorkflowDefinitionError, match="input 'a' has the same name as a node"):
        builder.build()


def test_input_declared_twice_is_rejected() -> None:
    builder = WorkflowBuilder().add_input("n", int).add_input("n", str)
    with pytest.raises(WorkflowDefinitionError, match="input 'n' is declared twice"):
        builder.build()


def test_input_of_an_unsupported_type_is_rejected() -> None:
    with pytest.raises(WorkflowDefinitionError, match="input 'when': type must be one of"):
        WorkflowBuilder().add_input("when", set).build()


def test_input_default_must_match_its_type() -> None:
    with pytest.raises(WorkflowDefinitionError, match="input 'n': default 'ten' is invalid"):
        WorkflowBuilder().add_input("n", int, default="ten").build()


def test_invalid_json_schema_input_is_rejected() -> None:
    with pytest.raises(WorkflowDefinitionError, match="invalid input schema"):
        WorkflowBuilder().add_input("n", {"type": "integr"}).build()
