"""`TenantAssignmentNode`: the caller's tenant, as the call's route resolved it, for the nodes after it.

The tenant comes only from the runtime context the pipeline builds; a source a caller or a model
can fill in (inputs, headers, tool arguments) is refused when the workflow is built.
Imports core and workflow only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from nexus.core.tenancy.context import tenant_context_of
from nexus.errors import WorkflowDefinitionError, WorkflowFailedError
from nexus.workflow import Node

_SOURCES = frozenset({"session", "route"})
# Words that name something the caller sends; said plainly, since it is the mistake to head off.
_CALLER_FILLED = re.compile(
    r"(?:^|[^a-z])(?:inputs?|headers?|arg(?:ument)?s?|params?|parameters?|body|query|payload|"
    r"cookies?|tool|request|claims?|fields?)(?:$|[^a-z])"
)


class TenantAssignmentNode(Node):
    """Output the call's tenant: `tenant_id` and `config` (its set config keys).

    Config: `tenant_source` ("session", the tenant the call's route resolved; "route" is the same),
    `enforce_isolation` (default true: without a tenant the run fails; false: outputs `tenant_id`
    None and an empty `config`), `audit_access` (default true: the call's audit record names this node).
    """

    outputs: ClassVar[tuple[str, ...]] = ("tenant_id", "config")
    config_keys: ClassVar[frozenset[str]] = frozenset({"tenant_source", "enforce_isolation", "audit_access"})

    def configure(self) -> None:
        source = self.config.get("tenant_source", "session")
        if not isinstance(source, str) or source.strip().lower() not in _SOURCES:
            raise self._definition_error(_refusal(source))
        self._enforce = self._flag("enforce_isolation")
        self._audit = self._flag("audit_access")

    def _flag(self, key: str) -> bool:
        value = self.config.get(key, True)
        if not isinstance(value, bool):
            raise self._definition_error(f"{key} must be true or false")
        return value

    def _definition_error(self, problem: str) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(
            f"node '{self.node_id}' (TenantAssignmentNode): {problem}", node_id=self.node_id
        )

    @property
    def runs_inline(self) -> bool:
        return True

    async def invoke(self, supplied: Mapping[str, Any], context: Mapping[str, Any]) -> Mapping[str, Any]:
        tenant = tenant_context_of(context)
        if tenant is None:
            if self._enforce:
                raise WorkflowFailedError(
                    f"node '{self.node_id}' failed: enforce_isolation is set and the call has no tenant "
                    "(run it as a tenant-scoped workflow, on a tenant's route)",
                    node_id=self.node_id,
                )
            return {"tenant_id": None, "config": {}}
        if self._audit:
            tenant.note_access(self.node_id)
        return {"tenant_id": tenant["tenant_id"], "config": tenant["config"]}


def _refusal(source: object) -> str:
    shown = repr(source)[:64]
    if isinstance(source, str) and _CALLER_FILLED.search(source.lower()):
        return (
            f"tenant_source {shown} is refused: the tenant must never come from what a caller or a "
            "model fills in (inputs, headers, tool arguments); use 'session', the tenant the "
            "call's route resolved"
        )
    return f"unknown tenant_source {shown}; use 'session' (the tenant the call's route resolved)"
