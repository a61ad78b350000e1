"""The one pipeline every call from every channel passes through, in a fixed order.

identify -> tenant -> authorize -> rate limit -> quota -> operation (execute, list, describe), and
always audit and metrics, denials and failures included. Channels build an `Invocation` (with the
route it arrived by) and render what comes back; only the pipeline decides the tenant.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

from nexus.core.audit import Auditor
from nexus.core.auth.authenticator import StepUp
from nexus.core.auth.service import LoginRefusedError
from nexus.core.authorization import Authorizer
from nexus.core.catalog import Catalog, Registration
from nexus.core.identity import Authenticator
from nexus.core.policy.permission import AUTHZ_SURFACE, METRICS_SURFACE, RESOURCES_SURFACE
from nexus.core.ports import CallObserver, Clock, Meter
from nexus.core.ratelimit import Limiter
from nexus.core.telemetry import NoopCallObserver
from nexus.core.tenancy.context import tenant_context_of
from nexus.core.tenancy.gate import NO_TENANT, TenantGate, TenantRefusedError
from nexus.core.tenancy.model import Tenant
from nexus.core.types import (
    Action,
    CallRecord,
    Decision,
    Invocation,
    Outcome,
    Principal,
    Result,
    RunTiming,
    WorkflowInfo,
)
from nexus.errors import (
    AccountLockedError,
    AuthenticationError,
    DeadlineExceededError,
    DependencyUnavailableError,
    ForbiddenError,
    InternalError,
    InvalidInputError,
    NexusError,
    RateLimitedError,
    TenantConflictError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from nexus.workflow import AsyncLocalRuntime
from nexus.workflow.runtime import new_run_id

T = TypeVar("T")
log = logging.getLogger("nexus.pipeline")

ALL_WORKFLOWS = "*"
# Names nobody registered never become metric labels: callers could otherwise mint series at will.
UNKNOWN_WORKFLOW = "_unknown"
# The audit's and the metrics' name for the login conversation (login, second factor, tokens, logout).
AUTH_SURFACE = "_auth"
# Surfaces that span every tenant: served on the platform's route only. (Tenant administration
# is too, except what a tenant's own administrators may do: its routes decide that.)
_PLATFORM_SURFACES = frozenset({METRICS_SURFACE, AUTHZ_SURFACE})
_NONE: frozenset[str] = frozenset()

_OUTCOMES: tuple[tuple[type[NexusError], Outcome], ...] = (
    (InvalidInputError, Outcome.INVALID_INPUT),
    (TenantConflictError, Outcome.INVALID_INPUT),
    (WorkflowNotFoundError, Outcome.NOT_FOUND),
    (AccountLockedError, Outcome.RATE_LIMITED),
    (AuthenticationError, Outcome.UNAUTHENTICATED),
    (ForbiddenError, Outcome.FORBIDDEN),
    (RateLimitedError, Outcome.RATE_LIMITED),
    (WorkflowFailedError, Outcome.FAILED),
    (DependencyUnavailableError, Outcome.UNAVAILABLE),
    (DeadlineExceededError, Outcome.UNAVAILABLE),
)


def _login_refusal(error: NexusError, unknown_route: str | None) -> str:
    """The audit's reason for a failed login step: what the caller must not learn (no tenant at
    the route, or no member of it), which renders as a wrong password, or the error itself."""
    if unknown_route is not None and isinstance(error, AuthenticationError):
        return unknown_route
    if isinstance(error, LoginRefusedError):
        return error.audit_reason
    return error.message


def outcome_of(error: NexusError) -> Outcome:
    for kind, outcome in _OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return Outcome.ERROR


# Ids only need to be unique, not secret: a random per-process prefix and a counter cost no syscall.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


@dataclass(slots=True)
class _RunMark:
    """When an execute's workflow run started and how long it took, for the call observer."""

    run_id: str
    started: float | None = None
    """Monotonic start; None until the run reaches the runtime."""
    elapsed: float = 0.0


@dataclass(slots=True)
class _Trail:
    """What the finally-block of a call needs to record, filled in as the call progresses."""

    invocation: Invocation
    outcome: Outcome = Outcome.ERROR
    error_code: str | None = InternalError.code
    reason: str = ""
    metric_workflow: str = UNKNOWN_WORKFLOW
    info: WorkflowInfo | None = None
    """The workflow called, once authorization has looked it up (None for listings)."""
    tenant: Tenant | None = None
    """The tenant the call was admitted to (None: the platform's route, or no tenancy)."""
    run: _RunMark | None = None
    """An execute's run (None for other calls)."""


@dataclass(slots=True)
class AuditSubject:
    """Filled in by a login step: which account it concerned, and what happened, for the audit."""

    principal_id: str | None = None
    reason: str = ""
    tenant_id: str | None = None
    """The tenant whose route the login came by (filled in by the pipeline before the step runs)."""


class Pipeline:
    """Wires the stages; built once by the app, shared by every channel."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        authenticator: Authenticator,
        authorizer: Authorizer,
        limiter: Limiter,
        auditor: Auditor,
        meter: Meter,
        clock: Clock,
        runtime: AsyncLocalRuntime,
        encode: Callable[[Any], object] = json.dumps,
        step_up: StepUp | None = None,
        tenancy: TenantGate | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        """`encode` is how channels will serialize outputs; a run whose outputs it refuses fails.
        `observer` sees every finished call (traces, call logs)."""
        self.catalog = catalog
        self.authenticator = authenticator
        self.authorizer = authorizer
        self._limiter = limiter
        self._auditor = auditor
        self._meter = meter
        self._clock = clock
        self._runtime = runtime
        self._encode = encode
        self._step_up = step_up if step_up is not None and step_up.active else None
        self.tenancy = tenancy
        # None when nothing observes: then no call builds a record it would hand to nobody.
        self._observer = None if isinstance(observer, NoopCallObserver) else observer

    async def execute(self, invocation: Invocation) -> Result:
        if invocation.action is not Action.EXECUTE:
            invocation = replace(invocation, action=Action.EXECUTE)
        notes: list[str] = []
        mark = _RunMark(new_run_id())
        run = functools.partial(self._run, notes=notes, mark=mark)
        return await self._call(invocation, run, notes=notes, run=mark)

    async def describe(self, invocation: Invocation) -> WorkflowInfo:
        return await self._call(replace(invocation, action=Action.READ), self._describe)

    async def list_workflows(self, invocation: Invocation) -> Sequence[WorkflowInfo]:
        listing = replace(invocation, action=Action.READ, workflow=ALL_WORKFLOWS)
        return await self._call(listing, self._list)

    async def inspect(
        self,
        invocation: Invocation,
        operation: Callable[[Invocation], Awaitable[T]],
        *,
        noted: Callable[[T], str] | None = None,
    ) -> T:
        """A call on a surface of its own (`invocation.surface`, e.g. health detail or explain):
        identified, authorized for `invocation.action` on that surface, rate limited and audited
        under `invocation.workflow` like any workflow call. `noted(result)` adds to the audit
        reason what the call concerned (explain: whose access it looked at)."""
        return await self._call(invocation, operation, noted)

    async def refuse(self, invocation: Invocation, error: NexusError) -> NexusError:
        """A call the channel could not parse: admit it as usual, fail it with `error`, audit it.

        Returns the error to render: `error`, or the admission's own (401, 404, 429) when that
        came first, so a malformed request learns nothing an ordinary one would not.
        """

        async def fail(_: Invocation) -> None:
            raise error

        try:
            await self._call(invocation, fail)
        except NexusError as raised:
            return raised
        return error

    async def authenticate(self, invocation: Invocation) -> Invocation:
        """Identify only (for transports that must refuse before parsing); failures are audited."""
        return await self._admit(invocation, authorize=False)

    async def admit(self, invocation: Invocation) -> Invocation:
        """Identify and authorize on `invocation.surface`, for endpoints machines poll (/metrics):
        refusals are audited, admissions are not, and the rate limit does not apply."""
        return await self._admit(invocation, authorize=True)

    async def permits(self, invocation: Invocation) -> bool:
        """Whether `invocation` would be allowed on its surface, without acting, auditing or
        counting it: for shaping a listing (an MCP resource shown only to who may read it).
        Never a substitute for the call itself, which decides again."""
        try:
            identified = await self._identify(invocation)
            identified = await self._enter_tenant(identified, _Trail(identified))
        except NexusError:
            return False
        return self.authorizer.decide(identified, None).allowed

    async def _admit(self, invocation: Invocation, *, authorize: bool) -> Invocation:
        trail = _Trail(invocation)
        started = self._clock.monotonic()
        try:
            invocation = trail.invocation = await self._identify_or_count(invocation)
            if authorize:
                invocation = await self._enter_tenant(invocation, trail)
                self._authorize(invocation, trail)
            return invocation
        except NexusError as exc:
            trail.outcome, trail.error_code = outcome_of(exc), exc.code
            trail.reason = trail.reason or exc.message
            await self._finish(trail, started)
            raise

    async def _call(
        self,
        invocation: Invocation,
        operation: Callable[[Invocation], Awaitable[T]],
        noted: Callable[[T], str] | None = None,
        notes: list[str] | None = None,
        run: _RunMark | None = None,
    ) -> T:
        """`notes` collects what the operation says for the audit, whether it succeeds or fails;
        `noted(result)` adds to them what a successful call concerned."""
        notes = [] if notes is None else notes
        trail = _Trail(invocation, run=run)
        started = self._clock.monotonic()
        try:
            invocation = trail.invocation = await self._identify_or_count(invocation)
            invocation = await self._enter_tenant(invocation, trail)
            decision = self._authorize(invocation, trail)
            trail.reason = decision.reason
            if self._step_up is not None and invocation.action is Action.EXECUTE:
                self._check_step_up(self._step_up, invocation, trail)
            await self._limiter.check(invocation)
            if trail.tenant is not None and self.tenancy is not None:
                await self.tenancy.quotas.count_request(trail.tenant, invocation.channel)
            value = await operation(invocation)
            trail.outcome, trail.error_code = Outcome.SUCCESS, None
            if noted is not None:
                notes.append(noted(value))
            return value
        except NexusError as exc:
            trail.outcome, trail.error_code = outcome_of(exc), exc.code
            trail.reason = trail.reason or exc.message
            raise
        except Exception as exc:
            log.exception("unexpected error", extra={"request_id": invocation.request_id})
            raise InternalError(f"Unexpected error; request id {invocation.request_id}.") from exc
        finally:
            if notes:
                trail.reason = "; ".join(filter(None, (trail.reason, *notes)))
            await self._finish(trail, started)

    async def account(self, invocation: Invocation, operation: Callable[[AuditSubject], Awaitable[T]]) -> T:
        """A step of the login conversation (`invocation.action` names it): rate-limited by client
        address like any call, audited and metered under `AUTH_SURFACE` with the outcome and reason.

        `operation` names the account it acted for through the `AuditSubject` it is handed.
        """
        invocation = replace(invocation, workflow=AUTH_SURFACE)
        trail = _Trail(invocation, metric_workflow=AUTH_SURFACE)
        subject = AuditSubject()
        started = self._clock.monotonic()
        unknown_route: str | None = None
        try:
            await self._limiter.check(invocation)
            unknown_route = await self._login_tenant(trail, subject)
            value = await operation(subject)
            trail.outcome, trail.error_code = Outcome.SUCCESS, None
            return value
        except NexusError as exc:
            trail.outcome, trail.error_code = outcome_of(exc), exc.code
            # A refusal whose cause the caller must not learn (no member of the route's tenant, or
            # no tenant at the route) renders as a wrong password; the audit gets the real reason.
            trail.reason = _login_refusal(exc, unknown_route)
            raise
        except Exception as exc:
            log.exception("unexpected error", extra={"request_id": invocation.request_id})
            raise InternalError(f"Unexpected error; request id {invocation.request_id}.") from exc
        finally:
            if subject.principal_id is not None:
                who = Principal(id=subject.principal_id, kind="login")
                trail.invocation = replace(trail.invocation, principal=who)
            if subject.tenant_id not in (None, NO_TENANT, trail.invocation.tenant_id):
                # The step knew better whose login this was (a sign-on begun on a tenant's route
                # and called back on the platform's): audited under that tenant.
                trail.invocation = replace(trail.invocation, tenant_id=subject.tenant_id)
            trail.reason = trail.reason or subject.reason
            await self._finish(trail, started)

    async def _login_tenant(self, trail: _Trail, subject: AuditSubject) -> str | None:
        """Tell the login step whose route it came by; the audit reason when it names no tenant.

        A route naming no tenant is not answered as such before anyone proved who they are: the
        step runs for a tenant nobody belongs to, so a login fails as a wrong password would
        (suspension is checked when a session would open, after membership): strangers learn
        nothing of a tenant's existence or state."""
        if self.tenancy is None:
            return None
        invocation = trail.invocation
        try:
            tenant = await self.tenancy.resolve(invocation.route, invocation.client_addr)
        except TenantRefusedError as refused:
            subject.tenant_id = NO_TENANT
            return refused.refusal.reason
        if tenant is not None:
            subject.tenant_id = tenant.tenant_id
            trail.invocation = replace(invocation, tenant_id=tenant.tenant_id)
        return None

    def _check_step_up(self, step_up: StepUp, invocation: Invocation, trail: _Trail) -> None:
        tags = () if trail.info is None else trail.info.tags
        try:
            passed = step_up.check(invocation.principal, tags)
        except NexusError as exc:
            trail.reason = exc.message
            raise
        if passed:
            trail.reason = f"{trail.reason}; {passed}" if trail.reason else passed

    async def _finish(self, trail: _Trail, started: float) -> None:
        elapsed = self._clock.monotonic() - started
        inv = trail.invocation
        self._meter.observe_call(inv.channel, trail.metric_workflow, trail.outcome, elapsed)
        if self._observer is not None:
            self._observe(self._observer, trail, started, elapsed)
        try:
            await self._auditor.record(inv, trail.outcome, trail.error_code, elapsed, trail.reason)
        except NexusError:
            raise
        except Exception as exc:
            # No answer leaves without its audit record: an unrecordable call fails closed.
            log.exception("audit sink failed", extra={"request_id": inv.request_id})
            raise DependencyUnavailableError(
                "The audit trail is unavailable; the call was not recorded."
            ) from exc

    def _observe(self, observer: CallObserver, trail: _Trail, started: float, elapsed: float) -> None:
        """Hand the finished call to the observer; its failure never fails the call."""
        mark = trail.run
        run = None
        if mark is not None and mark.started is not None:
            run = RunTiming(mark.run_id, mark.started - started, mark.elapsed)
        began = self._clock.now() - timedelta(seconds=elapsed)
        call = CallRecord(
            trail.invocation, trail.metric_workflow, trail.outcome, trail.error_code, began, elapsed, run
        )
        try:
            observer.observe(call)
        except Exception:
            log.exception("call observer failed", extra={"request_id": call.invocation.request_id})

    async def _identify_or_count(self, invocation: Invocation) -> Invocation:
        """Identify; a failed attempt still counts against its client address's rate limit, so
        guessing keys is throttled like any other traffic (429 once over the limit)."""
        try:
            return await self._identify(invocation)
        except AuthenticationError:
            await self._limiter.check(invocation)
            raise

    async def _identify(self, invocation: Invocation) -> Invocation:
        principal = await self.authenticator.authenticate(invocation.credential, invocation.channel)
        return invocation if principal is invocation.principal else invocation.as_made_by(principal)

    async def _enter_tenant(self, invocation: Invocation, trail: _Trail) -> Invocation:
        """Resolve the route to a tenant and admit the principal to it; the tenant id a channel
        may have put on the invocation never counts."""
        gate = self.tenancy
        if gate is None:
            return invocation if invocation.tenant_id is None else replace(invocation, tenant_id=None)
        try:
            tenant = await gate.resolve(invocation.route, invocation.client_addr)
            gate.check_member(tenant, invocation.principal)
        except TenantRefusedError as exc:
            trail.reason = exc.refusal.reason
            if exc.refusal.tenant_id is not None:  # audited where the attacked tenant sees it
                trail.invocation = replace(invocation, tenant_id=exc.refusal.tenant_id)
            raise
        tenant_id = tenant.tenant_id if tenant is not None else None
        if invocation.tenant_id != tenant_id:
            invocation = replace(invocation, tenant_id=tenant_id)
        trail.invocation, trail.tenant = invocation, tenant
        if tenant is not None:
            gate.check_active(tenant)
        return invocation

    def _authorize(self, invocation: Invocation, trail: _Trail) -> Decision:
        surface = invocation.surface
        if surface in _PLATFORM_SURFACES and invocation.tenant_id is not None:
            # Metrics and explain span every tenant: a tenant's route never serves them,
            # whatever its members' roles.
            trail.metric_workflow = invocation.workflow
            trail.reason = f"the {surface} surface is served on the platform's route only"
            raise ForbiddenError(f"This is served on the platform's route only, not a tenant's ({surface}).")
        if invocation.workflow == ALL_WORKFLOWS:
            trail.metric_workflow = ALL_WORKFLOWS
            info = None
        elif surface is None or surface == RESOURCES_SURFACE:
            entry = self.catalog.get(invocation.workflow)
            shared = self.tenancy.shared_with(trail.tenant) if self.tenancy is not None else _NONE
            if not entry.serves(invocation.tenant_id, shared):  # another tenant's, or the platform's
                trail.reason = "not served on this route"
                raise WorkflowNotFoundError(f"No workflow named {invocation.workflow[:64]!r}.")
            info = trail.info = entry.info
            trail.metric_workflow = info.name
        else:
            trail.metric_workflow = invocation.workflow  # a surface's own name, e.g. "_health"
            info = None
        decision = self.authorizer.decide(invocation, info)
        if not decision.visible:
            trail.reason = decision.reason
            if info is None:
                raise ForbiddenError(f"Not allowed to {invocation.action} {invocation.workflow!r} here.")
            raise WorkflowNotFoundError(f"No workflow named {invocation.workflow[:64]!r}.")
        if not decision.allowed:
            trail.reason = decision.reason
            raise ForbiddenError(f"Not allowed to {invocation.action} {invocation.workflow!r} here.")
        return decision

    async def _run(self, invocation: Invocation, *, notes: list[str], mark: _RunMark) -> Result:
        """Run the workflow; `notes` gets, for the audit, which nodes reached the tenant's data,
        whether the run then succeeds or fails; `mark` when it ran, for the observer."""
        entry = self.catalog.get(invocation.workflow)
        started = mark.started = self._clock.monotonic()
        run_id = mark.run_id
        tenant = self._tenant_of(invocation)
        context: Mapping[str, Any] | None = None
        try:
            # The runtime validates the inputs against the declared schema before any node runs;
            # callers give workflow inputs only, never parameters aimed at one node.
            if tenant is None or self.tenancy is None:
                outputs, run_id = await self._runtime.execute(
                    entry.workflow, parameters=invocation.inputs, flat_only=True, run_id=run_id
                )
            else:
                context = self.tenancy.context_for(tenant)
                async with self.tenancy.quotas.running(tenant, run_id):
                    outputs, run_id = await self._runtime.execute(
                        entry.workflow,
                        parameters=invocation.inputs,
                        flat_only=True,
                        run_id=run_id,
                        context=context,
                    )
        finally:
            mark.elapsed = self._clock.monotonic() - started
            self._meter.observe_workflow(entry.name, mark.elapsed)
            tenant_context = tenant_context_of(context) if context is not None else None
            if tenant_context is not None and tenant_context.accesses:
                notes.append(f"tenant data accessed by {', '.join(tenant_context.accesses)}")
        self._check_encodable(outputs)
        duration_ms = round((self._clock.monotonic() - started) * 1000, 3)
        return Result(run_id=run_id, workflow=entry.name, outputs=outputs, duration_ms=duration_ms)

    def _check_encodable(self, outputs: Mapping[str, Mapping[str, Any]]) -> None:
        """Fail the run, naming the node, when its outputs cannot be sent to any channel."""
        for node_id, values in outputs.items():
            try:
                self._encode(values)
            except (TypeError, ValueError) as exc:
                raise WorkflowFailedError(
                    f"node '{node_id}' returned outputs that cannot be sent as JSON: {exc}", node_id=node_id
                ) from exc

    async def _describe(self, invocation: Invocation) -> WorkflowInfo:
        return self.catalog.get(invocation.workflow).info

    async def _list(self, invocation: Invocation) -> Sequence[WorkflowInfo]:
        shared = self._shared_of(invocation)
        return [entry.info for entry in self.catalog.all() if self._may_see(invocation, entry, shared)]

    def served(self, invocation: Invocation) -> list[Registration]:
        """The workflows an admitted call's route is served (before authorization decides)."""
        shared = self._shared_of(invocation)
        return [entry for entry in self.catalog.all() if entry.serves(invocation.tenant_id, shared)]

    def _shared_of(self, invocation: Invocation) -> frozenset[str]:
        if invocation.tenant_id is None or self.tenancy is None:
            return _NONE
        # One index read: the tenant admitted (its shares may have changed since).
        return self.tenancy.shared_with(self.tenancy.tenant(invocation.tenant_id))

    def _may_see(self, invocation: Invocation, entry: Registration, shared: frozenset[str]) -> bool:
        if not entry.serves(invocation.tenant_id, shared):
            return False
        return self.authorizer.decide(invocation, entry.info).allowed  # a listing asks to read

    def _tenant_of(self, invocation: Invocation) -> Tenant | None:
        """The admitted tenant of a call (its id was set by `_enter_tenant`)."""
        if invocation.tenant_id is None or self.tenancy is None:
            return None
        tenant = self.tenancy.tenant(invocation.tenant_id)
        if tenant is None:  # deleted while the call was on its way: nothing to run it for
            raise WorkflowNotFoundError(f"No workflow named {invocation.workflow[:64]!r}.")
        return tenant
