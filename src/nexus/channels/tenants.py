"""Tenant administration over HTTP: `/admin/tenants` on the API, `/cli/v1/admin/tenants` for the CLI,
and `/tenant/workflows/{name}/share` (`/cli/v1/...`) where a tenant's own administrator shares.

Each call is a pipeline call on the `tenants` surface (`<channel>:<action>:tenants`), identified,
authorized, rate limited and audited as `_tenants` with the tenant it acted on; only the platform's
own route administers tenants, and only a tenant's route shares that tenant's workflows (with
workflow_sharing True). Never imports backends: the app hands in its tenancy runtime.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from nexus.channels import codec
from nexus.channels.asgi import JSON, HotRoute, HttpAnswer, HttpCall, problem
from nexus.channels.http import HttpOptions
from nexus.core.catalog import Catalog
from nexus.core.pipeline import Pipeline
from nexus.core.policy.permission import TENANTS_SURFACE
from nexus.core.tenancy.gate import TenantGate
from nexus.core.tenancy.model import Tenant, check_tenant_id
from nexus.core.types import Action, Channel, Invocation
from nexus.errors import (
    ConfigurationError,
    ForbiddenError,
    InvalidInputError,
    NexusError,
    TenantConflictError,
    TenantNotFoundError,
    WorkflowNotFoundError,
)

TENANTS_AUDIT = "_tenants"  # the audit's and the metrics' name for tenant administration
CREATE = "create"
SUSPEND = "suspend"
RESUME = "resume"
DELETE = "delete"
SHARE = "share"  # sharing a workflow with a tenant, and taking it back
_CREATE_FIELDS = frozenset({"tenant_id", "name", "config"})
_SHARE_FIELDS = frozenset({"tenant_id"})

Document = dict[str, Any]


class TenantAdmin(Protocol):
    """What the routes act through: the app's tenancy runtime (the same one `Nexus.create_tenant` uses)."""

    @property
    def gate(self) -> TenantGate: ...

    async def create(
        self, catalog: Catalog, tenant_id: str, name: str, config: Mapping[str, Any] | None
    ) -> Tenant: ...

    async def delete(self, tenant_id: str) -> bool: ...

    async def share_workflow(self, catalog: Catalog, name: str, tenant_id: str, *, share: bool) -> Tenant: ...


def tenant_document(tenant: Tenant) -> Document:
    """A tenant as every channel shows it."""
    suspended_at = tenant.suspended_at
    return {
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "status": tenant.status.value,
        "created_at": tenant.created_at.isoformat(),
        "suspended_at": None if suspended_at is None else suspended_at.isoformat(),
        "config": tenant.config.to_mapping(),
        "shared_workflows": sorted(tenant.shared_workflows),
    }


def creation_of(body: Mapping[str, Any]) -> tuple[str, str, Mapping[str, Any] | None]:
    """`{"tenant_id", "name", "config"}` as arguments of `create`; other fields are refused."""
    unknown = sorted(str(key)[:64] for key in body if key not in _CREATE_FIELDS)
    if unknown:
        raise InvalidInputError(f"Unknown field(s) {unknown}; a tenant is {sorted(_CREATE_FIELDS)}.")
    tenant_id, name, config = body.get("tenant_id"), body.get("name"), body.get("config")
    if not isinstance(tenant_id, str) or not isinstance(name, str):
        raise InvalidInputError('The body must name the tenant: {"tenant_id": "...", "name": "..."}.')
    if config is not None and not isinstance(config, dict):
        raise InvalidInputError("config must be a JSON object of the tenant's settings.")
    return tenant_id, name, config


class TenantRoutes:
    """The tenant routes of one HTTP-borne channel (API or CLI)."""

    def __init__(
        self, pipeline: Pipeline, channel: Channel, options: HttpOptions, admin: TenantAdmin
    ) -> None:
        self._pipeline = pipeline
        self._channel = channel
        self._max_body_bytes = options.max_body_bytes
        self._admin = admin

    def routes(self, prefix: str) -> list[HotRoute]:
        listing = f"{prefix}/admin/tenants"
        one = f"{listing}/{{tenant_id}}"
        return [
            HotRoute("GET", listing, self.list_tenants),
            HotRoute("POST", listing, self.create),
            HotRoute("GET", one, self.show),
            HotRoute("POST", f"{one}/suspend", self.suspend),
            HotRoute("POST", f"{one}/resume", self.resume),
            HotRoute("DELETE", one, self.delete),
            HotRoute("POST", f"{one}/workflows/{{name}}", self.share),
            HotRoute("DELETE", f"{one}/workflows/{{name}}", self.unshare),
            HotRoute("POST", f"{prefix}/tenant/workflows/{{name}}/share", self.share_own),
        ]

    async def list_tenants(self, call: HttpCall) -> HttpAnswer:
        async def listing(_: Invocation) -> Document:
            tenants = await self._admin.gate.directory.list()
            return {"tenants": [tenant_document(tenant) for tenant in tenants]}

        return await self._answer(call, Action.READ, listing, _listed)

    async def show(self, call: HttpCall) -> HttpAnswer:
        tenant_id = call.params["tenant_id"]

        async def show(_: Invocation) -> Document:
            return await self._with_usage(await self._found(tenant_id))

        return await self._answer(call, Action.READ, show, _noted("read"))

    async def create(self, call: HttpCall) -> HttpAnswer:
        async def add(_: Invocation) -> Document:
            body = codec.loads_object(await call.body(self._max_body_bytes), what="The body")
            tenant_id, name, config = creation_of(body)
            try:
                tenant = await self._admin.create(self._pipeline.catalog, tenant_id, name, config)
            except TenantConflictError:
                raise  # the id or a route is another tenant's: 409
            except ConfigurationError as exc:  # a bad id, name or setting
                raise InvalidInputError(exc.message) from None
            return tenant_document(tenant)

        return await self._answer(call, CREATE, add, _noted("created"), created=True)

    async def suspend(self, call: HttpCall) -> HttpAnswer:
        return await self._set_suspended(call, suspended=True)

    async def resume(self, call: HttpCall) -> HttpAnswer:
        return await self._set_suspended(call, suspended=False)

    async def delete(self, call: HttpCall) -> HttpAnswer:
        tenant_id = call.params["tenant_id"]

        async def remove(_: Invocation) -> Document:
            tenant = await self._found(tenant_id)
            if not await self._admin.delete(tenant.tenant_id):
                raise _not_found(tenant_id)  # deleted meanwhile by another call
            return {**tenant_document(tenant), "deleted": True}

        return await self._answer(call, DELETE, remove, _noted("deleted"))

    async def share(self, call: HttpCall) -> HttpAnswer:
        return await self._set_shared(call, share=True)

    async def unshare(self, call: HttpCall) -> HttpAnswer:
        return await self._set_shared(call, share=False)

    async def _set_shared(self, call: HttpCall, *, share: bool) -> HttpAnswer:
        tenant_id, name = call.params["tenant_id"], call.params["name"]

        async def change(_: Invocation) -> Document:
            if share and not self._admin.gate.policy.may_share_workflow(platform_admin=True):
                raise ForbiddenError(_SHARING_OFF)
            tenant = await self._found(tenant_id)
            if not self._pipeline.catalog.has(name) and name not in tenant.shared_workflows:
                raise WorkflowNotFoundError(f"No workflow named {name[:64]!r}.")
            try:
                changed = await self._admin.share_workflow(
                    self._pipeline.catalog, name, tenant.tenant_id, share=share
                )
            except TenantNotFoundError:
                raise _not_found(tenant_id) from None  # deleted meanwhile
            except ConfigurationError as exc:  # the platform's, every tenant's, or past mcp_tools
                raise InvalidInputError(exc.message) from None
            return _shared(name, changed.tenant_id, share, changed)

        done = _noted_share("shared", "with") if share else _noted_share("unshared", "from")
        return await self._answer(call, SHARE, change, done)

    async def share_own(self, call: HttpCall) -> HttpAnswer:
        """A tenant's own administrator shares one of its workflows with another tenant."""
        name = call.params["name"]

        async def share(admitted: Invocation) -> Document:
            policy = self._admin.gate.policy
            if not policy.may_share_workflow(platform_admin=False):
                raise ForbiddenError(_SHARING_OFF if policy.workflow_sharing is False else _ADMINS_ONLY)
            gate, catalog = self._admin.gate, self._pipeline.catalog
            own = admitted.tenant_id
            assert own is not None  # noqa: S101  # _answer admits this operation on tenants' routes only
            if not catalog.has(name) or not catalog.get(name).serves(own, gate.shared_with(gate.tenant(own))):
                raise WorkflowNotFoundError(f"No workflow named {name[:64]!r}.")
            target = _share_target(codec.loads_object(await call.body(self._max_body_bytes), what="The body"))
            try:
                catalog.shareable(name)
            except ConfigurationError as exc:
                raise InvalidInputError(exc.message) from None
            await self._found(target)  # an unknown target answers as any unknown tenant does
            try:
                await self._admin.share_workflow(catalog, name, target, share=True)
            except TenantNotFoundError:
                raise _not_found(target) from None
            except ConfigurationError:
                # Only the target's quota is left to refuse; its limits are not this tenant's to read.
                raise InvalidInputError(
                    f"Workflow {name!r} cannot be shared with tenant {target!r}: that tenant's "
                    "mcp_tools quota has no room for it."
                ) from None
            return _shared(name, target, True)

        return await self._answer(call, SHARE, share, _noted_share("shared", "with"), on_tenant=True)

    async def _set_suspended(self, call: HttpCall, *, suspended: bool) -> HttpAnswer:
        tenant_id = call.params["tenant_id"]

        async def change(_: Invocation) -> Document:
            if not _is_tenant_id(tenant_id) or not await self._admin.gate.directory.set_suspended(
                tenant_id, suspended
            ):
                raise _not_found(tenant_id)
            return tenant_document(await self._found(tenant_id))

        action, done = (SUSPEND, "suspended") if suspended else (RESUME, "resumed")
        return await self._answer(call, action, change, _noted(done))

    async def _answer(
        self,
        call: HttpCall,
        action: Action | str,
        operation: Callable[[Invocation], Awaitable[Document]],
        noted: Callable[[Document], str],
        *,
        created: bool = False,
        on_tenant: bool = False,
    ) -> HttpAnswer:
        invocation = Invocation(
            call.request_id,
            self._channel,
            TENANTS_AUDIT,
            {},
            call.credential,
            call.client_addr,
            action=action,
            surface=TENANTS_SURFACE,
            route=call.route(self._channel),
            trace_parent=call.trace_parent,
        )

        async def on_platform(admitted: Invocation) -> Document:
            if admitted.tenant_id is not None:
                # A tenant's own members (even its administrators) never manage tenants.
                raise ForbiddenError("Tenants are administered on the platform's route, not a tenant's.")
            return await operation(admitted)

        async def on_a_tenant(admitted: Invocation) -> Document:
            if admitted.tenant_id is None:
                raise ForbiddenError(
                    "A tenant's own workflows are shared on that tenant's route; on the platform's "
                    "route, share with POST /admin/tenants/{tenant_id}/workflows/{name}."
                )
            return await operation(admitted)

        request_id = call.request_id
        guarded = on_a_tenant if on_tenant else on_platform
        try:
            document = await self._pipeline.inspect(invocation, guarded, noted=noted)
        except NexusError as error:
            return problem(error, request_id, call.path)
        headers = [("x-request-id", request_id)]
        if created:
            headers.append(("location", f"{call.path.rstrip('/')}/{document['tenant_id']}"))
        return HttpAnswer(201 if created else 200, codec.dumps(document), JSON, tuple(headers))

    async def _found(self, tenant_id: str) -> Tenant:
        tenant = await self._admin.gate.directory.get(tenant_id) if _is_tenant_id(tenant_id) else None
        if tenant is None:
            raise _not_found(tenant_id)
        return tenant

    async def _with_usage(self, tenant: Tenant) -> Document:
        """The tenant, what it holds now (running workflows, live CLI sessions) and its limits."""
        quotas = self._admin.gate.quotas
        in_use = await quotas.in_use(tenant)
        try:
            profile = quotas.book.profile_of(tenant)
        except ConfigurationError:  # names a profile this app does not define: its calls fail closed
            quota: Document = {"profile": tenant.config.quota_profile, "limits": None}
        else:
            quota = {"profile": profile.name, "limits": profile.to_mapping()}
        usage = {resource.value: count for resource, count in in_use.items()}
        return {**tenant_document(tenant), "usage": usage, "quota": quota}


def _is_tenant_id(text: str) -> bool:
    try:
        check_tenant_id(text)
    except ConfigurationError:
        return False
    return True


_SHARING_OFF = "cross_tenant_policies['workflow_sharing'] is False: no workflow is shared between tenants."
_ADMINS_ONLY = (
    "Sharing workflows between tenants is for platform administrators "
    "(cross_tenant_policies['workflow_sharing'] is 'admin_only')."
)


def _not_found(tenant_id: str) -> TenantNotFoundError:
    return TenantNotFoundError(f"No tenant with id {tenant_id[:64]!r}.")


def _share_target(body: Mapping[str, Any]) -> str:
    """`{"tenant_id": "..."}`: the tenant to share with, named by id; other fields are refused."""
    unknown = sorted(str(key)[:64] for key in body if key not in _SHARE_FIELDS)
    if unknown:
        raise InvalidInputError(f'Unknown field(s) {unknown}; the body is {{"tenant_id": "..."}}.')
    target = body.get("tenant_id")
    if not isinstance(target, str):
        raise InvalidInputError('The body must name the tenant to share with: {"tenant_id": "..."}.')
    return target


def _shared(name: str, tenant_id: str, shared: bool, tenant: Tenant | None = None) -> Document:
    """What a share answers; the receiving tenant's own shares only for the platform's administrators."""
    document: Document = {"workflow": name, "tenant_id": tenant_id, "shared": shared}
    if tenant is not None:
        document["shared_workflows"] = sorted(tenant.shared_workflows)
    return document


def _noted_share(done: str, preposition: str) -> Callable[[Document], str]:
    return lambda document: (
        f"{done} workflow {document['workflow']} {preposition} tenant {document['tenant_id']}"
    )


def _listed(document: Document) -> str:
    return f"listed {len(document['tenants'])} tenant(s)"


def _noted(done: str) -> Callable[[Document], str]:
    return lambda document: f"{done} tenant {document['tenant_id']}"
