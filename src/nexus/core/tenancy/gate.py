"""The pipeline's tenant stage: which tenant a call is for, and whether its caller may reach it.

The tenant comes from the route the channel saw (`Invocation.route`), never from inputs. A route
that names no tenant this credential belongs to is refused as not found, whether the tenant exists
or not; a suspended tenant is refused on every channel. Calls on the platform's own routes (no
tenant) are for platform principals only. Imports only core and errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nexus.core.tenancy.directory import TenantDirectory
from nexus.core.tenancy.model import Tenant
from nexus.core.tenancy.policy import CrossTenantPolicy
from nexus.core.tenancy.quota import TenantQuotas
from nexus.core.types import Principal, TenantRoute
from nexus.errors import TenantNotFoundError, TenantSuspendedError

_NOT_HERE = "Nothing is served to this credential at this address."
NO_TENANT = "-"
"""The tenant of a login on a route that names no tenant: no account belongs to it, so the login
fails as a wrong password would (it cannot be a tenant id)."""
_NONE: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a route was refused, for the audit (never shown to the caller)."""

    tenant_id: str | None
    reason: str


class TenantRefusedError(TenantNotFoundError):
    """A `TenantNotFoundError` that carries the audit's reason and the attacked tenant."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(_NOT_HERE)
        self.refusal = refusal


class TenantGate:
    """Resolves routes to tenants and admits principals to them; counts quotas on the way."""

    def __init__(
        self,
        directory: TenantDirectory,
        quotas: TenantQuotas,
        policy: CrossTenantPolicy,
        contexts: Callable[[Tenant], Mapping[str, Any]],
    ) -> None:
        self.directory = directory
        self.quotas = quotas
        self.policy = policy
        self._contexts = contexts

    async def resolve(self, route: TenantRoute | None, client_addr: str) -> Tenant | None:
        """The tenant `route` names; None for the platform's routes. Unknown tenants raise."""
        if route is None:
            return None
        router = await self.directory.current()
        names_tenant, tenant = router.find(route, client_addr)
        if not names_tenant:
            return None  # a host not under the base domain, or the base domain itself: the platform
        if tenant is None:
            raise TenantRefusedError(Refusal(None, f"no tenant at {route.kind} {route.value[:64]!r}"))
        return tenant

    @staticmethod
    def check_active(tenant: Tenant) -> None:
        if not tenant.is_active:
            raise TenantSuspendedError(f"Tenant {tenant.tenant_id!r} is suspended; its calls are refused.")

    def context_for(self, tenant: Tenant) -> Mapping[str, Any]:
        """The runtime context of a run for `tenant`: `tenant_context` and `tenant_id`."""
        return self._contexts(tenant)

    def check_member(self, tenant: Tenant | None, principal: Principal) -> None:
        """Refuse, as not found, a principal on a route of a tenant it does not belong to, a
        tenant principal on the platform's routes, and (with session isolation) a session on
        another tenant's route than the one it was made in."""
        if tenant is None:
            if principal.tenants:
                raise TenantRefusedError(Refusal(None, "a tenant's credential on the platform's route"))
            return
        tenant_id = tenant.tenant_id
        if tenant_id not in principal.tenants:
            raise TenantRefusedError(Refusal(tenant_id, f"credential not a member of tenant {tenant_id}"))
        if (
            self.policy.session_isolation
            and principal.session_id is not None
            and principal.tenant_id != tenant_id
        ):
            made_in = principal.tenant_id or "the platform"
            raise TenantRefusedError(
                Refusal(
                    tenant_id, f"session made in {made_in} used on tenant {tenant_id} (session isolation)"
                )
            )

    def admit_session(self, tenant_id: str) -> None:
        """A session is about to open in `tenant_id` (its member proved who they are): refuse it
        when the tenant is suspended, or gone since the login began."""
        tenant = self.tenant(tenant_id)
        if tenant is None:
            raise TenantRefusedError(Refusal(tenant_id, f"tenant {tenant_id} is gone"))
        self.check_active(tenant)

    def tenant(self, tenant_id: str) -> Tenant | None:
        """A tenant of the index in force (one dictionary read)."""
        return self.directory.router.index.by_id.get(tenant_id)

    def shared_with(self, tenant: Tenant | None) -> frozenset[str]:
        """The workflows shared with `tenant` that its routes serve: none while workflow_sharing
        is False, so shares stored before the policy was closed never reach a caller."""
        if tenant is None or self.policy.workflow_sharing is False:
            return _NONE
        return tenant.shared_workflows
