"""Runtime: parameter routing, concurrency, timeouts, failures and the sync/async entry points."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest

from nexus.errors import DeadlineExceededError, InvalidInputError, WorkflowFailedError
from nexus.workflow import AsyncLocalRuntime, LocalRuntime, NodeTimeoutError, Workflow, WorkflowBuilder


def fn_node(builder: WorkflowBuilder, node_id: str, function: Callable[..., Any], **config: Any) -> None:
    builder.add_node("PythonCodeNode", node_id, {"function": function, **config})


async def test_independent_branches_run_concurrently() -> None:
    left_started, right_started = asyncio.Event(), asyncio.Event()

    async def left() -> str:
        left_started.set()
        await right_started.wait()  # only returns if the right branch runs at the same time
        return "left"

    async def right() -> str:
        right_started.set()
        await left_started.wait()
        return "right"

    builder = WorkflowBuilder()
    fn_node(builder, "left", left, timeout=5)
    fn_node(builder, "right", right, timeout=5)
    results, _ = await AsyncLocalRuntime().execute(builder.build())
    assert results == {"left": {"result": "left"}, "right": {"result": "right"}}


async def test_downstream_node_waits_for_all_of_its_inputs() -> None:
    workflow = (
        WorkflowBuilder()
        .add_node("PythonCodeNode", "a", {"code": "result = 2"})
        .add_node("PythonCodeNode", "b", {"code": "result = 3"})
        .add_node("PythonCodeNode", "product", {"code": "result = x * y"})
        .add_connection("a", "result", "product", "x")
        .add_connection("b", "result", "product", "y")
        .build()
    )
    results, _ = await AsyncLocalRuntime().execute(workflow)
    assert results["product"] == {"result": 6}
    assert list(results) == list(workflow.order)


async def test_node_past_its_timeout_raises_deadline_exceeded_with_node_id() -> None:
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    builder = WorkflowBuilder()
    fn_node(builder, "stuck", stuck, timeout=0.01)
    with pytest.raises(NodeTimeoutError, match="node 'stuck' timed out") as caught:
        await AsyncLocalRuntime().execute(builder.build())
    assert isinstance(caught.value, DeadlineExceededError)
    assert caught.value.node_id == "stuck"
    assert caught.value.detail["node_id"] == "stuck"


async def test_runtime_wide_timeout_applies_to_nodes_without_their_own() -> None:
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    builder = WorkflowBuilder()
    fn_node(builder, "stuck", stuck)
    with pytest.raises(NodeTimeoutError):
        await AsyncLocalRuntime(node_timeout_s=0.01).execute(builder.build())


async def test_timeout_error_raised_by_node_code_is_a_failure_not_a_deadline() -> None:
    def own_timeout() -> None:
        raise TimeoutError("upstream said so")

    builder = WorkflowBuilder()
    fn_node(builder, "t", own_timeout, pure=True)
    with pytest.raises(WorkflowFailedError, match="node 't' failed: TimeoutError: upstream said so"):
        await AsyncLocalRuntime().execute(builder.build())


async def test_failure_names_node_and_exception_and_keeps_the_cause() -> None:
    def broken(x: int) -> int:
        return x // 0

    builder = WorkflowBuilder()
    fn_node(builder, "divide", broken)
    with pytest.raises(WorkflowFailedError) as caught:
        await AsyncLocalRuntime().execute(builder.build(), {"x": 1})
    error = caught.value
    assert error.message == "node 'divide' failed: ZeroDivisionError: integer division or modulo by zero"
    assert "Traceback" not in error.message
    assert error.node_id == "divide"
    assert isinstance(error.__cause__, ZeroDivisionError)
    assert error.to_problem()["node_id"] == "divide"


async def test_failure_cancels_running_siblings() -> None:
    sibling_started, cancelled = asyncio.Event(), asyncio.Event()

    async def sibling() -> None:
        sibling_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def failing() -> None:
        await sibling_started.wait()
        raise ValueError("bad row")

    builder = WorkflowBuilder()
    fn_node(builder, "sibling", sibling, timeout=5)
    fn_node(builder, "failing", failing, timeout=5)
    with pytest.raises(WorkflowFailedError, match="node 'failing' failed: ValueError: bad row"):
        await AsyncLocalRuntime().execute(builder.build())
    assert cancelled.is_set()


def routing_workflow() -> Workflow:
    def first(x: int) -> int:
        return x

    def second(x: int, y: int = 0) -> dict[str, int]:
        return {"x": x, "y": y}

    builder = WorkflowBuilder()
    fn_node(builder, "first", first, pure=True)
    fn_node(builder, "second", second, pure=True)
    return builder.build()


async def test_flat_parameters_reach_every_node_that_takes_them() -> None:
    results, _ = await AsyncLocalRuntime().execute(routing_workflow(), {"x": 1, "y": 2, "unused": 3})
    assert results == {"first": {"result": 1}, "second": {"x": 1, "y": 2}}


async def test_targeted_parameters_reach_only_their_node_and_win_over_flat_ones() -> None:
    results, _ = await AsyncLocalRuntime().execute(routing_workflow(), {"x": 1, "second": {"x": 10}})
    assert results == {"first": {"result": 1}, "second": {"x": 10, "y": 0}}


async def test_missing_required_node_input_is_invalid_input_naming_node() -> None:
    with pytest.raises(InvalidInputError, match="node 'first': input 'x': required input is missing"):
        await AsyncLocalRuntime().execute(routing_workflow(), {"second": {"x": 1}})


async def test_node_input_of_the_wrong_type_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match=r"node '(first|second)': input 'x': expected int"):
        await AsyncLocalRuntime().execute(routing_workflow(), {"x": True})


async def test_dotted_output_paths_select_inside_outputs() -> None:
    workflow = (
        WorkflowBuilder()
        .add_node("PythonCodeNode", "src", {"code": "result = {'items': [{'id': 7}, {'id': 8}], 'total': 2}"})
        .add_node("PythonCodeNode", "first", {"code": "result = item['id']"})
        .add_node("PythonCodeNode", "count", {"code": "result = n"})
        .add_node("PythonCodeNode", "last", {"code": "result = v"})
        .add_connection("src", "result.items.0", "first", "item")
        .add_connection("src", "result.total", "count", "n")
        .add_connection("src", "result.items.-1.id", "last", "v")
        .build()
    )
    results, _ = await AsyncLocalRuntime().execute(workflow)
    assert results["first"] == {"result": 7}
    assert results["count"] == {"result": 2}
    assert results["last"] == {"result": 8}


async def test_missing_dotted_output_fails_naming_the_consumer() -> None:
    workflow = (
        WorkflowBuilder()
        .add_node("PythonCodeNode", "src", {"code": "result = {'items': []}"})
        .add_node("PythonCodeNode", "first", {"code": "result = item"})
        .add_connection("src", "result.items.0", "first", "item")
        .build()
    )
    with pytest.raises(
        WorkflowFailedError, match=re.escape("output 'result.items.0' of node 'src' is missing")
    ):
        await AsyncLocalRuntime().execute(workflow)


async def test_declared_inputs_are_enforced_and_defaulted_by_the_runtime() -> None:
    workflow = (
        WorkflowBuilder()
        .add_input("n", int, default=4)
        .add_node("PythonCodeNode", "square", {"code": "result = n * n"})
        .build()
    )
    runtime = AsyncLocalRuntime()
    assert (await runtime.execute(workflow))[0] == {"square": {"result": 16}}
    with pytest.raises(InvalidInputError, match="n: 'four' is not of type 'integer'"):
        await runtime.execute(workflow, {"n": "four"})


async def test_context_reaches_code_and_cannot_be_overridden_by_inputs() -> None:
    workflow = (
        WorkflowBuilder().add_node("PythonCodeNode", "who", {"code": "result = tenant_context['id']"}).build()
    )
    results, _ = await AsyncLocalRuntime().execute(
        workflow, {"tenant_context": {"id": "attacker"}}, context={"tenant_context": {"id": "acme"}}
    )
    assert results == {"who": {"result": "acme"}}


async def test_run_id_is_returned_as_given_or_generated() -> None:
    workflow = WorkflowBuilder().add_node("PythonCodeNode", "a", {"code": "result = 1"}).build()
    runtime = AsyncLocalRuntime()
    assert (await runtime.execute(workflow, run_id="run-1"))[1] == "run-1"
    first, second = (await runtime.execute(workflow))[1], (await runtime.execute(workflow))[1]
    assert first != second


async def test_sync_function_runs_in_a_worker_thread_unless_pure() -> None:
    def where() -> int:
        return threading.get_ident()

    builder = WorkflowBuilder()
    fn_node(builder, "threaded", where)
    fn_node(builder, "inline", where, pure=True)
    results, _ = await AsyncLocalRuntime().execute(builder.build())
    assert results["inline"]["result"] == threading.get_ident()
    assert results["threaded"]["result"] != threading.get_ident()


async def test_sync_runtime_refuses_to_run_inside_an_event_loop() -> None:
    workflow = WorkflowBuilder().add_node("PythonCodeNode", "a", {"code": "result = 1"}).build()
    with pytest.raises(RuntimeError, match="use `await AsyncLocalRuntime"):
        LocalRuntime().execute(workflow)


def test_sync_runtime_works_from_a_thread_without_a_loop() -> None:
    workflow = WorkflowBuilder().add_node("PythonCodeNode", "a", {"code": "result = x + 1"}).build()
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(LocalRuntime().execute(workflow, {"x": 1})))
    worker.start()
    worker.join(timeout=10)
    assert outcome[0][0] == {"a": {"result": 2}}


def test_sync_runtime_reports_failures_like_the_async_one() -> None:
    workflow = WorkflowBuilder().add_node("PythonCodeNode", "a", {"code": "result = missing_name"}).build()
    with pytest.raises(
        WorkflowFailedError, match="node 'a' failed: NameError: name 'missing_name'"
    ) as caught:
        LocalRuntime().execute(workflow)
    assert caught.value.__context__ is caught.value.__cause__


def test_runtime_rejects_a_non_positive_default_timeout() -> None:
    with pytest.raises(ValueError, match="node_timeout_s must be positive"):
        LocalRuntime(node_timeout_s=0)


async def test_inline_code_that_overstays_its_timeout_still_fails_with_a_timeout() -> None:
    from nexus.workflow import NodeTimeoutError

    builder = WorkflowBuilder()
    builder.add_node(
        "PythonCodeNode", "slow", {"code": "import time\ntime.sleep(0.05)\nresult = 1", "timeout": 0.01}
    )
    with pytest.raises(NodeTimeoutError) as caught:
        await AsyncLocalRuntime().execute(builder.build())
    assert caught.value.node_id == "slow"
