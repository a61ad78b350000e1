"""The registered workflows: names, metadata and the immutable graphs behind them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from nexus.core.tenancy.model import WORKFLOW_NAME, check_tenant_id
from nexus.core.types import WorkflowInfo
from nexus.errors import ConfigurationError, WorkflowNotFoundError
from nexus.workflow import Workflow

_NAME = WORKFLOW_NAME
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True, slots=True)
class Registration:
    """A workflow as registered: the graph and what callers may learn about it."""

    workflow: Workflow
    info: WorkflowInfo
    tenant_scoped: bool = False
    """Served on tenants' routes, each run with the caller's tenant context; not on the platform's."""
    tenants: frozenset[str] | None = None
    """With `tenant_scoped`: the tenants it is served to (None: every tenant)."""

    @property
    def name(self) -> str:
        return self.info.name

    def serves(self, tenant_id: str | None, shared: frozenset[str] = frozenset()) -> bool:
        """Whether a call on `tenant_id`'s route (None: the platform's) may reach this workflow;
        `shared` is what that tenant has been shared (its `shared_workflows`, where sharing is on)."""
        if tenant_id is None:
            return not self.tenant_scoped
        return self.tenant_scoped and (
            self.tenants is None or tenant_id in self.tenants or self.info.name in shared
        )


def _metadata(name: str, metadata: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Policy attributes of a workflow: names to strings, numbers, booleans or lists of those."""
    if metadata is None:
        return MappingProxyType({})
    if not isinstance(metadata, Mapping):
        raise ConfigurationError(f"metadata of {name!r} must be a dict, not {type(metadata).__name__}.")
    for key, value in metadata.items():
        if not isinstance(key, str) or _TAG.fullmatch(key) is None or key in ("name", "tags"):
            raise ConfigurationError(
                f"Invalid metadata key {key!r} for workflow {name!r} (name and tags are set)."
            )
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(item, _SCALARS) for item in items):
            raise ConfigurationError(
                f"metadata {key!r} of {name!r} must be a string, number, boolean or a list of those."
            )
    return MappingProxyType(
        {key: tuple(value) if isinstance(value, list) else value for key, value in metadata.items()}
    )


def _scope(name: str, tenant_scoped: object, tenants: Iterable[str] | None) -> frozenset[str] | None:
    if not isinstance(tenant_scoped, bool):
        raise ConfigurationError(f"tenant_scoped of {name!r} must be True or False.")
    if tenants is None:
        return None
    if not tenant_scoped:
        raise ConfigurationError(f"tenants= of {name!r} needs tenant_scoped=True.")
    if isinstance(tenants, str):
        raise ConfigurationError(f"tenants of {name!r} must be a list of tenant ids, not one string.")
    scope = frozenset(check_tenant_id(tenant) for tenant in tenants)
    if not scope:
        raise ConfigurationError(f"tenants of {name!r} is empty; leave it out to serve every tenant.")
    return scope


class Catalog:
    """Name -> registration; registration may happen before or while serving."""

    def __init__(self) -> None:
        self._entries: dict[str, Registration] = {}
        self.version = 0
        """Bumped by every registration, so derived documents (OpenAPI) know when to rebuild."""

    def register(
        self,
        name: str,
        workflow: Workflow,
        *,
        description: str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        tenant_scoped: bool = False,
        tenants: Iterable[str] | None = None,
    ) -> Registration:
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise ConfigurationError(
                f"Invalid workflow name {name!r}: use a letter, then up to 63 letters, digits, '_' or '-'."
            )
        if not isinstance(workflow, Workflow):
            raise ConfigurationError(
                f"register({name!r}, ...) needs a built Workflow (call WorkflowBuilder.build()), "
                f"got {type(workflow).__name__}."
            )
        if isinstance(tags, str):
            raise ConfigurationError(f"tags of {name!r} must be a list of strings, not one string {tags!r}.")
        tag_tuple = tuple(dict.fromkeys(tags))
        bad = [t for t in tag_tuple if not isinstance(t, str) or _TAG.fullmatch(t) is None]
        if bad:
            raise ConfigurationError(f"Invalid tag(s) {bad!r} for workflow {name!r}.")
        if name in self._entries:
            raise ConfigurationError(f"A workflow named {name!r} is already registered.")
        scope = _scope(name, tenant_scoped, tenants)
        info = WorkflowInfo(
            name=name,
            description=description,
            tags=tag_tuple,
            input_schema=workflow.input_schema,
            attributes=_metadata(name, metadata),
        )
        entry = Registration(workflow=workflow, info=info, tenant_scoped=tenant_scoped, tenants=scope)
        self._entries[name] = entry
        self.version += 1
        return entry

    def get(self, name: str) -> Registration:
        entry = self._entries.get(name)
        if entry is None:
            raise WorkflowNotFoundError(f"No workflow named {name[:64]!r}.")
        return entry

    def unregister(self, name: str) -> None:
        """Take back a registration that could not be enabled (e.g. past a tenant's mcp_tools)."""
        if self._entries.pop(name, None) is not None:
            self.version += 1

    def has(self, name: str) -> bool:
        return name in self._entries

    def shareable(self, name: str) -> Registration:
        """The registration of `name` when it can be shared with one more tenant: tenant-scoped and
        registered for some tenants only; `ConfigurationError` naming the reason otherwise."""
        entry = self._entries.get(name)
        if entry is None:
            raise ConfigurationError(f"No workflow named {name[:64]!r}.")
        if not entry.tenant_scoped:
            raise ConfigurationError(
                f"Workflow {name!r} is the platform's (not tenant_scoped): it is never served to tenants."
            )
        if entry.tenants is None:
            raise ConfigurationError(f"Workflow {name!r} is served to every tenant already.")
        return entry

    def all(self) -> list[Registration]:
        return sorted(self._entries.values(), key=lambda e: e.name)
