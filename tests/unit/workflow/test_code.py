"""PythonCodeNode: compiled once at build, fresh globals per call, callables sync or async."""

from __future__ import annotations

from typing import Any

import pytest

from nexus.errors import WorkflowFailedError
from nexus.workflow import AsyncLocalRuntime, WorkflowBuilder
from nexus.workflow import code as code_module
from nexus.workflow.code import PythonCodeNode


async def test_code_is_compiled_once_at_build_and_never_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting_compile(source: str, filename: str, mode: str) -> Any:
        calls.append(filename)
        return compile(source, filename, mode)

    monkeypatch.setattr(code_module, "compile", counting_compile, raising=False)
    workflow = WorkflowBuilder().add_node("PythonCodeNode", "inc", {"code": "result = x + 1"}).build()
    assert calls == ["<node inc>"]
    runtime = AsyncLocalRuntime()
    for x in range(3):
        assert (await runtime.execute(workflow, {"x": x}))[0] == {"inc": {"result": x + 1}}
    assert calls == ["<node inc>"]
    node = workflow.nodes["inc"]
    assert isinstance(node, PythonCodeNode)
    assert node.code is not None
    assert node.code.co_filename == "<node inc>"


async def test_each_call_gets_fresh_globals() -> None:
    source = "seen = globals().get('memo', 0)\nmemo = seen + 1\nresult = seen"
    workflow = WorkflowBuilder().add_node("PythonCodeNode", "memo", {"code": source}).build()
    runtime = AsyncLocalRuntime()
    assert (await runtime.execute(workflow))[0]["memo"] == {"result": 0}
    assert (await runtime.execute(workflow))[0]["memo"] == {"result": 0}


async def test_code_that_never_sets_result_fails_naming_the_node() -> None:
    workflow = WorkflowBuilder().add_node("PythonCodeNode", "quiet", {"code": "x = 1"}).build()
    with pytest.raises(WorkflowFailedError, match="node 'quiet' failed: the code did not assign 'result'"):
        await AsyncLocalRuntime().execute(workflow)


async def test_function_dict_return_is_the_outputs_and_other_values_become_result() -> None:
    def split(text: str) -> dict[str, Any]:
        return {"words": text.split(), "count": len(text.split())}

    async def shout(text: str) -> str:
        return text.upper()

    workflow = (
        WorkflowBuilder()
        .add_node("PythonCodeNode", "split", {"function": split})
        .add_node("PythonCodeNode", "shout", {"function": shout})
        .add_connection("split", "words.1", "shout", "text")
        .build()
    )
    results, _ = await AsyncLocalRuntime().execute(workflow, {"split": {"text": "hello big world"}})
    assert results == {"split": {"words": ["hello", "big", "world"], "count": 3}, "shout": {"result": "BIG"}}


async def test_function_receives_context_values_it_names() -> None:
    def tenant_name(tenant_context: dict[str, str]) -> str:
        return tenant_context["name"]

    workflow = WorkflowBuilder().add_node("PythonCodeNode", "t", {"function": tenant_name}).build()
    results, _ = await AsyncLocalRuntime().execute(workflow, context={"tenant_context": {"name": "acme"}})
    assert results == {"t": {"result": "acme"}}


async def test_function_with_kwargs_takes_every_flat_parameter() -> None:
    def collect(**values: Any) -> dict[str, Any]:
        return dict(values)

    workflow = (
        WorkflowBuilder().add_node("PythonCodeNode", "all", {"function": collect, "pure": True}).build()
    )
    results, _ = await AsyncLocalRuntime().execute(workflow, {"a": 1, "b": 2})
    assert results == {"all": {"a": 1, "b": 2}}


async def test_config_values_are_static_inputs_with_templates_filled() -> None:
    def greet(greeting: str, name: str) -> str:
        return f"{greeting} {name}"

    workflow = (
        WorkflowBuilder()
        .add_node("PythonCodeNode", "greet", {"function": greet, "greeting": "Hello ${title}", "pure": True})
        .build()
    )
    results, _ = await AsyncLocalRuntime().execute(workflow, {"name": "Ada", "greet": {"title": "Dr"}})
    assert results == {"greet": {"result": "Hello Dr Ada"}}


async def test_function_context_value_wins_over_a_caller_input() -> None:
    def tenant_name(tenant_context: dict[str, str]) -> str:
        return tenant_context["name"]

    workflow = (
        WorkflowBuilder().add_node("PythonCodeNode", "t", {"function": tenant_name, "pure": True}).build()
    )
    results, _ = await AsyncLocalRuntime().execute(
        workflow, {"tenant_context": {"name": "evil"}}, context={"tenant_context": {"name": "acme"}}
    )
    assert results == {"t": {"result": "acme"}}
