"""Tenant administration over HTTP: `/admin/tenants` on the API, `/cli/v1/admin/tenants` for the CLI.

Each call is a pipeline call on the `tenants` surface (`<channel>:<action>:tenants`), identified,
authorized, rate limited and audited as `_tenants` with the tenant it acted on; only the platform's
own route administers tenants. Never imports backends: the app hands in its tenancy runtime.
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
    TenantNotFoundError,
)

TENANTS_AUDIT = "_tenants"  # the audit's and the metrics' name for tenant administration
CREATE = "create"
SUSPEND = "suspend"
RESUME = "resume"
DELETE = "delete"
_CREATE_FIELDS = frozenset({"tenant_id", "name", "config"})

Document = dict[str, Any]


class TenantAdmin(Protocol):
    """What the routes act through: the app's tenancy runtime (the same one `Nexus.create_tenant` uses)."""

    @property
    def gate(self) -> TenantGate: ...

    async def create(
        self, catalog: Catalog, tenant_id: str, name: str, config: Mapping[str, Any] | None
    ) -> Tenant: ...

    async def delete(self, tenant_id: str) -> bool: ...


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
            except ConfigurationError as exc:  # a bad id, name or setting, or one taken already
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
        )

        async def on_platform(admitted: Invocation) -> Document:
            if admitted.tenant_id is not None:
                # A tenant's own members (even its administrators) never manage tenants.
                raise ForbiddenError("Tenants are administered on the platform's route, not a tenant's.")
            return await operation(admitted)

        request_id = call.request_id
        try:
            document = await self._pipeline.inspect(invocation, on_platform, noted=noted)
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


def _not_found(tenant_id: str) -> TenantNotFoundError:
    return TenantNotFoundError(f"No tenant with id {tenant_id[:64]!r}.")


def _listed(document: Document) -> str:
    return f"listed {len(document['tenants'])} tenant(s)"


def _noted(done: str) -> Callable[[Document], str]:
    return lambda document: f"{done} tenant {document['tenant_id']}"
