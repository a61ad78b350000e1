"""The document's `cross_tenant_policies`: what may cross from one tenant to another.

`data_sharing`: False forbids any cross-tenant read (a tenant's data is granted to no other
tenant's database role, and `share_data` refuses); True lets an administrator grant one tenant read
access to another's data. `workflow_sharing`: who may make one workflow available to several
tenants: False nobody (a tenant-scoped registration names exactly one tenant, and shares stored
earlier are not served), "admin_only" the platform's administrators, True also a tenant's own
administrators for the workflows their tenant has. A share adds the workflow to the receiving
tenant's `shared_workflows`. `session_isolation`: True binds a login session to the tenant it was
made in; False lets it reach every tenant its user belongs to. Imports only the standard library,
core and errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from nexus.errors import ConfigurationError

WorkflowSharing = bool | Literal["admin_only"]
ADMIN_ONLY: Final = "admin_only"
_KEYS: Final = ("data_sharing", "workflow_sharing", "session_isolation")


@dataclass(frozen=True, slots=True)
class CrossTenantPolicy:
    data_sharing: bool = False
    workflow_sharing: WorkflowSharing = ADMIN_ONLY
    session_isolation: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.data_sharing, bool):
            raise ConfigurationError(f"data_sharing must be True or False, got {self.data_sharing!r}.")
        if not isinstance(self.session_isolation, bool):
            raise ConfigurationError(
                f"session_isolation must be True or False, got {self.session_isolation!r}."
            )
        sharing = self.workflow_sharing
        if not isinstance(sharing, bool) and sharing != ADMIN_ONLY:
            raise ConfigurationError(
                f"workflow_sharing must be True, False or 'admin_only', got {sharing!r}."
            )

    @classmethod
    def from_mapping(cls, policies: Mapping[str, Any] | None) -> CrossTenantPolicy:
        if policies is None:
            return cls()
        if not isinstance(policies, Mapping):
            raise ConfigurationError("cross_tenant_policies must be a dict.")
        unknown = sorted(str(key) for key in policies if key not in _KEYS)
        if unknown:
            raise ConfigurationError(f"Unknown cross_tenant_policies key(s) {unknown}; known: {list(_KEYS)}.")
        return cls(**dict(policies))

    def check_registration(self, name: str, tenant_scoped: bool, tenants: frozenset[str] | None) -> None:
        """Refuse a registration that reaches several tenants when `workflow_sharing` is False."""
        if self.workflow_sharing is False and tenant_scoped and (tenants is None or len(tenants) != 1):
            raise ConfigurationError(
                f"Workflow {name!r} would be available to several tenants, and "
                "cross_tenant_policies['workflow_sharing'] is False: name exactly one with tenants=[...]."
            )

    def may_share_workflow(self, *, platform_admin: bool) -> bool:
        """Whether a caller may make a workflow available to one more tenant."""
        if self.workflow_sharing is False:
            return False
        return platform_admin or self.workflow_sharing is True
