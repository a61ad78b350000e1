"""Run a built `Workflow`: one asyncio task per ready node, a timeout per node, fail-fast cancellation.

Flat parameters reach every node that accepts their name; a dict under a node id targets that node;
connections feed outputs downstream. Later sources win: flat < targeted < connections. Runtime
`context` (such as `tenant_context`) reaches code nodes and templates and cannot be overridden by inputs.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from nexus.errors import NexusError, WorkflowFailedError
from nexus.workflow.graph import Workflow
from nexus.workflow.node import Node, NodeTimeoutError

Results = dict[str, dict[str, Any]]
DEFAULT_NODE_TIMEOUT_S = 30.0
_NO_CONTEXT: Mapping[str, Any] = MappingProxyType({})


# Run ids only need to be unique: a random per-process prefix and a counter cost no syscall.
_RUN_PREFIX = os.urandom(8).hex()
_RUN_COUNTER = itertools.count(1)


def new_run_id() -> str:
    return f"{_RUN_PREFIX}{next(_RUN_COUNTER):016x}"


class AsyncLocalRuntime:
    """Execute workflows on the running event loop."""

    def __init__(self, *, node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S) -> None:
        """`node_timeout_s` bounds each node that sets no `timeout` of its own."""
        if isinstance(node_timeout_s, bool) or node_timeout_s <= 0:
            raise ValueError(f"node_timeout_s must be positive, not {node_timeout_s!r}")
        self.node_timeout_s = float(node_timeout_s)

    async def execute(
        self,
        workflow: Workflow,
        parameters: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        flat_only: bool = False,
    ) -> tuple[Results, str]:
        """Run every node once and return `({node_id: outputs}, run_id)`.

        With `flat_only`, no key targets a node: every parameter is a workflow input and is
        validated as one (calls from the network must never reach a node's parameters directly).

        Raises:
            InvalidInputError: the flat parameters break the workflow's declared inputs.
            NodeTimeoutError: a node ran past its timeout (a `DeadlineExceededError`).
            WorkflowFailedError: a node raised; `node_id` names it and `__cause__` is the original.
        """
        targeted: dict[str, Mapping[str, Any]] = {}
        if flat_only:
            flat = dict(parameters or {})
        else:
            flat, targeted = split_parameters(workflow, parameters or {})
        if workflow.declares_inputs:
            flat = workflow.validate_inputs(flat)
        run = _Run(workflow, flat, targeted, context or _NO_CONTEXT, self.node_timeout_s)
        return await run.all_nodes(), run_id or new_run_id()


class LocalRuntime:
    """Execute workflows from synchronous code (a thread with no running event loop)."""

    def __init__(self, *, node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S) -> None:
        self._runtime = AsyncLocalRuntime(node_timeout_s=node_timeout_s)

    @property
    def node_timeout_s(self) -> float:
        return self._runtime.node_timeout_s

    def execute(
        self,
        workflow: Workflow,
        parameters: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> tuple[Results, str]:
        """Like `AsyncLocalRuntime.execute`, on a fresh event loop that is closed afterwards."""
        if _has_running_loop():
            raise RuntimeError(
                "LocalRuntime.execute() cannot run inside a running event loop; "
                "use `await AsyncLocalRuntime().execute(...)` instead"
            )
        return asyncio.run(self._execute_and_release(workflow, parameters, run_id, context))

    async def _execute_and_release(
        self,
        workflow: Workflow,
        parameters: Mapping[str, Any] | None,
        run_id: str | None,
        context: Mapping[str, Any] | None,
    ) -> tuple[Results, str]:
        try:
            return await self._runtime.execute(workflow, parameters, run_id=run_id, context=context)
        finally:
            # Pools and clients are bound to this loop, which asyncio.run is about to close.
            await release_loop_resources([workflow])


async def release_loop_resources(workflows: Iterable[Workflow]) -> None:
    """Close what the node types of `workflows` keep open on the running loop (connection pools,
    HTTP clients), before that loop closes."""
    for node_type in {type(node) for workflow in workflows for node in workflow.nodes.values()}:
        await node_type.release_loop_resources()


def _has_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def split_parameters(
    workflow: Workflow, parameters: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Mapping[str, Any]]]:
    """Separate flat parameters from `{node_id: {...}}` ones that target a single node."""
    flat: dict[str, Any] = {}
    targeted: dict[str, Mapping[str, Any]] = {}
    for key, value in parameters.items():
        if key in workflow.nodes and isinstance(value, Mapping):
            targeted[key] = value
        else:
            flat[key] = value
    return flat, targeted


class _Run:
    """The state of one execution; discarded afterwards."""

    def __init__(
        self,
        workflow: Workflow,
        flat: Mapping[str, Any],
        targeted: Mapping[str, Mapping[str, Any]],
        context: Mapping[str, Any],
        default_timeout_s: float,
    ) -> None:
        self.workflow = workflow
        self.flat = flat
        self.targeted = targeted
        self.context = context
        self.default_timeout_s = default_timeout_s
        self.results: Results = {}

    async def all_nodes(self) -> Results:
        order = self.workflow.order
        if len(order) == 1:
            # One node: nothing to wait for or overlap with, so no bookkeeping either.
            node_id = order[0]
            return {node_id: await self.one_node(node_id)}
        waiting = {node_id: set(self.workflow.upstream(node_id)) for node_id in order}
        running: dict[asyncio.Task[dict[str, Any]], str] = {}
        try:
            while waiting or running:
                ready = [node_id for node_id, deps in waiting.items() if not deps]
                for node_id in ready:
                    del waiting[node_id]
                if len(ready) == 1 and not running:
                    # Nothing to overlap with: run it in this task and skip task creation and scheduling.
                    self.finished(ready[0], await self.one_node(ready[0]), waiting)
                    continue
                for node_id in ready:
                    running[asyncio.create_task(self.one_node(node_id), name=f"node:{node_id}")] = node_id
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    node_id = running.pop(task)
                    self.finished(node_id, task.result(), waiting)
        finally:
            if running:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
        return {node_id: self.results[node_id] for node_id in order}

    def finished(self, node_id: str, outputs: dict[str, Any], waiting: dict[str, set[str]]) -> None:
        self.results[node_id] = outputs
        for deps in waiting.values():
            deps.discard(node_id)

    def inputs_for(self, node: Node) -> dict[str, Any]:
        inputs = {name: value for name, value in self.flat.items() if node.accepts(name)}
        inputs.update(self.targeted.get(node.node_id, {}))
        for connection in self.workflow.incoming[node.node_id]:
            try:
                inputs[connection.dst_input] = connection.select(self.results[connection.src])
            except (LookupError, TypeError) as exc:
                raise WorkflowFailedError(
                    f"node '{node.node_id}' failed: output '{connection.src_output}' of node "
                    f"'{connection.src}' is missing",
                    node_id=node.node_id,
                ) from exc
        return inputs

    async def one_node(self, node_id: str) -> dict[str, Any]:
        node = self.workflow.nodes[node_id]
        timeout_s = node.timeout_s or self.default_timeout_s
        if node.runs_inline:
            return await self._inline_node(node, timeout_s)
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                outputs = await node.invoke(self.inputs_for(node), self.context)
        except NexusError:
            raise
        except TimeoutError as exc:
            if deadline.expired():
                raise NodeTimeoutError(
                    f"node '{node_id}' timed out after {timeout_s:g} s", node_id=node_id, timeout_s=timeout_s
                ) from exc
            raise _failure(node_id, exc) from exc
        except Exception as exc:
            raise _failure(node_id, exc) from exc
        when = deadline.when()
        if when is not None and asyncio.get_running_loop().time() > when:
            # Code that runs inline (code strings, pure functions) cannot be interrupted; a run that
            # overstayed still fails, so no answer ever arrives past its node's deadline.
            raise NodeTimeoutError(
                f"node '{node_id}' timed out after {timeout_s:g} s", node_id=node_id, timeout_s=timeout_s
            )
        return _checked_outputs(node, outputs)

    async def _inline_node(self, node: Node, timeout_s: float) -> dict[str, Any]:
        """A node that never suspends: no timer to arm, only the deadline to check when it returns."""
        # Not the loop's clock: on Python 3.11 finding the running loop costs a getpid system call.
        clock = time.monotonic
        started = clock()
        try:
            outputs = await node.invoke(self.inputs_for(node), self.context)
        except NexusError:
            raise
        except Exception as exc:
            raise _failure(node.node_id, exc) from exc
        if clock() - started > timeout_s:
            raise NodeTimeoutError(
                f"node '{node.node_id}' timed out after {timeout_s:g} s",
                node_id=node.node_id,
                timeout_s=timeout_s,
            )
        return _checked_outputs(node, outputs)


def _failure(node_id: str, exc: BaseException) -> WorkflowFailedError:
    return WorkflowFailedError(f"node '{node_id}' failed: {type(exc).__name__}: {exc}", node_id=node_id)


def _checked_outputs(node: Node, outputs: Any) -> dict[str, Any]:
    if not isinstance(outputs, Mapping):
        raise WorkflowFailedError(
            f"node '{node.node_id}' failed: it returned {type(outputs).__name__}, not a mapping of outputs",
            node_id=node.node_id,
        )
    missing = [name for name in node.output_names() if name not in outputs]
    if missing:
        raise WorkflowFailedError(
            f"node '{node.node_id}' failed: declared output(s) missing: {', '.join(missing)}",
            node_id=node.node_id,
        )
    return dict(outputs)
