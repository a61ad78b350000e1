"""`PythonCodeNode`: trusted, app-author Python run in-process, from a code string or a callable.

Code strings are compiled once when the workflow is built and run inline on the event loop with a
fresh globals dict per call: inputs and runtime context become variables, `result` is the output.
Workflow definitions never come from the network, so this code is as trusted as the app itself.
"""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Callable, Mapping
from types import CodeType, MappingProxyType
from typing import Any, ClassVar

from nexus.errors import WorkflowDefinitionError, WorkflowFailedError
from nexus.workflow.node import Node, Param, as_outputs, call_maybe_async, params_from_signature


class PythonCodeNode(Node):
    """Run `code` (a string; any input name becomes a variable) or `function` (a callable).

    Config: `code` or `function`, and `pure` (with `function`: a sync callable runs inline rather
    than in a worker thread). A `function` receives the inputs its signature names, plus context
    values (such as `tenant_context`) it names; a dict return is the outputs, anything else is
    `{"result": value}`.
    """

    config_keys: ClassVar[frozenset[str]] = frozenset({"code", "function", "pure"})

    def configure(self) -> None:
        code = self.config.get("code")
        function = self.config.get("function")
        if (code is None) == (function is None):
            raise WorkflowDefinitionError(
                f"node '{self.node_id}' (PythonCodeNode): give exactly one of 'code' or 'function'",
                node_id=self.node_id,
            )
        self._target: CodeType | Callable[..., Any]
        self._params: Mapping[str, Param] = MappingProxyType({})
        self._takes_any = True
        if code is not None:
            self._target = self._compile(code)
        else:
            self._bind_function(function)

    def _compile(self, code: Any) -> CodeType:
        if not isinstance(code, str):
            raise WorkflowDefinitionError(
                f"node '{self.node_id}': 'code' must be a string", node_id=self.node_id
            )
        try:
            return compile(code, f"<node {self.node_id}>", "exec")
        except SyntaxError as exc:
            raise WorkflowDefinitionError(
                f"node '{self.node_id}': syntax error in code at line {exc.lineno}: {exc.msg}",
                node_id=self.node_id,
                line=exc.lineno,
            ) from exc

    def _bind_function(self, function: Any) -> None:
        if not callable(function):
            raise WorkflowDefinitionError(
                f"node '{self.node_id}': 'function' must be callable", node_id=self.node_id
            )
        pure = self.config.get("pure", False)
        if not isinstance(pure, bool):
            raise WorkflowDefinitionError(
                f"node '{self.node_id}': 'pure' must be a bool", node_id=self.node_id
            )
        params, self._takes_any = params_from_signature(function)
        self._params = MappingProxyType(params)
        self._target = function
        self._inline = pure or inspect.iscoroutinefunction(function)

    @property
    def runs_inline(self) -> bool:
        # A code string runs with exec; a pure sync function is called directly. Neither awaits.
        target = self._target
        return isinstance(target, CodeType) or (self._inline and not inspect.iscoroutinefunction(target))

    @property
    def code(self) -> CodeType | None:
        """The compiled code object, built once at `build()` and reused by every run."""
        return self._target if isinstance(self._target, CodeType) else None

    def output_names(self) -> tuple[str, ...]:
        return ("result",) if isinstance(self._target, CodeType) else ()

    def input_specs(self) -> Mapping[str, Param]:
        return self._params

    def accepts(self, name: str) -> bool:
        return self._takes_any or name in self._params

    async def invoke(self, supplied: Mapping[str, Any], context: Mapping[str, Any]) -> Mapping[str, Any]:
        target = self._target
        if isinstance(target, CodeType):
            return {"result": self._execute(target, supplied, context)}
        # Context is applied last so a caller's input can never impersonate it (e.g. tenant_context).
        from_context = {name: value for name, value in context.items() if self.accepts(name)}
        inputs = self.resolve_inputs({**supplied, **from_context}, context)
        return as_outputs(await call_maybe_async(target, inputs, inline=self._inline))

    def _execute(self, code: CodeType, supplied: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
        # Context is applied last so a caller's input can never impersonate it (e.g. tenant_context).
        namespace: dict[str, Any] = {"__builtins__": builtins, **supplied, **context}
        exec(code, namespace)  # noqa: S102  # trusted app-author code, compiled at build
        if "result" not in namespace:
            raise WorkflowFailedError(
                f"node '{self.node_id}' failed: the code did not assign 'result'", node_id=self.node_id
            )
        return namespace["result"]
