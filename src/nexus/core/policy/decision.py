"""The decision point: RBAC must allow, then every applicable policy must be satisfied.

One `PolicyAuthorizer` serves every channel and surface. The RBAC part of a decision is cached per
effective role set, channel, action and target; policies are evaluated per call, since their
attributes (time, address, user) change. `explain` gives the same decision with all its parts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Protocol

from nexus.core.policy.abac import Policy, PolicySet, Verdict
from nexus.core.policy.memo import memo_table, remember
from nexus.core.policy.permission import CHANNEL_WORDS, RESOURCES_SURFACE, WILDCARD
from nexus.core.policy.rbac import READ, Grant, RoleBook
from nexus.core.types import Decision, Invocation, Principal, WorkflowInfo

_CACHE_LIMIT = 65_536
LISTING = Decision(allowed=True, reason="listing: each workflow is shown only when it may be read")
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class WallClock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


@dataclass(frozen=True, slots=True)
class Target:
    """What a decision is about: `keys` are the names a permission or policy resource may match."""

    label: str
    keys: tuple[str, ...]
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Explanation:
    """A decision with every part that produced it (for `nexus authz explain` and the admin endpoint)."""

    decision: Decision
    target: str
    roles: tuple[str, ...]
    grant: str | None
    policies: tuple[dict[str, Any], ...] = field(default=())

    def to_document(self) -> dict[str, Any]:
        outcome = "allow" if self.decision.allowed else "deny" if self.decision.visible else "invisible"
        return {
            "outcome": outcome,
            "allowed": self.decision.allowed,
            "visible": self.decision.visible,
            "reason": self.decision.reason,
            "target": self.target,
            "roles": list(self.roles),
            "permission": self.grant,
            "policies": list(self.policies),
        }


@dataclass(frozen=True, slots=True)
class _Rbac:
    allowed: bool
    grant: Grant | None
    readable: bool
    reason: str


_NO_ROLES = _Rbac(True, None, True, "allowed: no roles are configured")


class PolicyAuthorizer:
    """RBAC (a `RoleBook`, or none: every role set allowed) then ABAC (a `PolicySet`, or none)."""

    def __init__(
        self, roles: RoleBook | None, policies: PolicySet | None, clock: WallClock, zone: tzinfo
    ) -> None:
        self.book = roles
        self.policies = policies
        self.clock = clock
        self.zone = zone
        self._targets: OrderedDict[tuple[str, str, str | None], Target] = memo_table()
        self._rbac: OrderedDict[tuple[object, ...], _Rbac] = memo_table()
        self._allowed: OrderedDict[tuple[object, ...], Decision] = memo_table()
        self._versions = self._current_versions()

    def decide(self, invocation: Invocation, workflow: WorkflowInfo | None) -> Decision:
        principal, channel, action = invocation.principal, invocation.channel, invocation.action
        surface, client_addr = invocation.surface, invocation.client_addr
        if workflow is None and surface in (None, RESOURCES_SURFACE):
            return LISTING
        target = self.target(channel, workflow, surface)
        self._sync()
        roles = self._roles_of(principal)
        rbac = self._rbac_part(roles, channel, action, target)
        if not rbac.allowed:
            return Decision(
                allowed=False,
                reason=rbac.reason,
                visible=rbac.readable and self._readable(principal, roles, channel, target, client_addr),
            )
        policies = self._applicable(channel, action, target)
        if not policies:
            return self._allow(roles, channel, action, target, rbac, policies)
        context = self._context(principal, roles, channel, client_addr, target, policies)
        for policy in policies:
            held = policy.condition.evaluate(context)
            if held is not policy.permits:
                verdict = Verdict(policy, held)
                reason = f"denied: {verdict.describe(policy.condition.missing(context))}"
                # Policies decide visibility too: denied on read is invisible; on another action,
                # it is forbidden only while the same caller may still read the target.
                visible = action != READ and self._readable(principal, roles, channel, target, client_addr)
                return Decision(allowed=False, reason=reason, visible=visible)
        return self._allow(roles, channel, action, target, rbac, policies)

    def explain(self, invocation: Invocation, workflow: WorkflowInfo | None) -> Explanation:
        """The decision `decide` makes, with the effective roles and every applicable policy's outcome."""
        decision = self.decide(invocation, workflow)
        principal, channel, action = invocation.principal, invocation.channel, invocation.action
        surface, client_addr = invocation.surface, invocation.client_addr
        target = (
            self.target(channel, workflow, surface)
            if workflow or surface not in (None, RESOURCES_SURFACE)
            else None
        )
        roles = self._roles_of(principal)
        if target is None:
            return Explanation(decision, "the workflow listing", tuple(sorted(roles or ())), None)
        rbac = self._rbac_part(roles, channel, action, target)
        applicable = self._applicable(channel, action, target)
        context = self._context(principal, roles, channel, client_addr, target, applicable)
        rows = []
        for policy in applicable:
            verdict = Verdict(policy, policy.condition.evaluate(context))
            missing = policy.condition.missing(context)
            rows.append(
                {
                    "name": policy.name,
                    "effect": policy.effect,
                    "condition": policy.condition.text,
                    "held": verdict.held,
                    "satisfied": verdict.satisfied,
                    "missing": list(missing),
                    "reason": verdict.describe(missing),
                }
            )
        grant = str(rbac.grant) if rbac.grant is not None else None
        return Explanation(decision, target.label, tuple(sorted(roles or ())), grant, tuple(rows))

    def target(self, channel: str, workflow: WorkflowInfo | None, surface: str | None) -> Target:
        """The target's names: a workflow by name, tags and the surface's word, or a named surface."""
        cache_key = (channel, workflow.name if workflow is not None else "", surface)
        found = self._targets.get(cache_key)
        if found is not None:
            return found
        if workflow is None:
            assert surface is not None  # noqa: S101  # decide() answers the listing before this
            found = Target(f"the {surface} surface", (surface, WILDCARD), {"name": surface})
        else:
            word = surface or CHANNEL_WORDS.get(channel, "workflows")
            keys = tuple(dict.fromkeys((workflow.name, *workflow.tags, word, WILDCARD)))
            attributes = {**workflow.attributes, "name": workflow.name, "tags": workflow.tags}
            label = f"workflow {workflow.name!r}" + (f" as {surface}" if surface else "")
            found = Target(label, keys, attributes)
        return remember(self._targets, cache_key, found, _CACHE_LIMIT)

    # -- parts -------------------------------------------------------------------------------------

    def _roles_of(self, principal: Principal) -> frozenset[str] | None:
        return self.book.roles_of(principal) if self.book is not None else None

    def _rbac_part(self, roles: frozenset[str] | None, channel: str, action: str, target: Target) -> _Rbac:
        key = (roles, channel, action, target.keys)
        found = self._rbac.get(key)
        if found is None:
            found = remember(self._rbac, key, self._judge_roles(roles, channel, action, target), _CACHE_LIMIT)
        return found

    def _judge_roles(self, roles: frozenset[str] | None, channel: str, action: str, target: Target) -> _Rbac:
        if self.book is None or roles is None:
            return _NO_ROLES
        grants = self.book.grants(roles)
        grant = grants.match(channel, action, target.keys)
        if grant is not None:
            return _Rbac(True, grant, True, f"allowed: {grant}")
        readable = action != READ and grants.match(channel, READ, target.keys) is not None
        held = ", ".join(sorted(roles)) or "none"
        reason = (
            f"denied: no permission of the roles held ({held}) allows {channel}:{action} on {target.label}"
        )
        return _Rbac(False, None, readable, reason)

    def _allow(
        self,
        roles: frozenset[str] | None,
        channel: str,
        action: str,
        target: Target,
        rbac: _Rbac,
        policies: tuple[Policy, ...],
    ) -> Decision:
        """The allowing decision, reason included, built once per role set, target and action."""
        key = (roles, channel, action, target.keys)
        found = self._allowed.get(key)
        if found is None:
            held = "".join(f"; policy {p.name!r} ({p.effect}) satisfied" for p in policies)
            found = remember(
                self._allowed, key, Decision(allowed=True, reason=rbac.reason + held), _CACHE_LIMIT
            )
        return found

    def _applicable(self, channel: str, action: str, target: Target) -> tuple[Policy, ...]:
        return self.policies.applicable(channel, action, target.keys) if self.policies else ()

    def _readable(
        self,
        principal: Principal,
        roles: frozenset[str] | None,
        channel: str,
        target: Target,
        client_addr: str,
    ) -> bool:
        """Whether the policies on reading `target` let this caller see it (RBAC aside)."""
        policies = self._applicable(channel, READ, target)
        if not policies:
            return True
        context = self._context(principal, roles, channel, client_addr, target, policies)
        return all(p.condition.evaluate(context) is p.permits for p in policies)

    def _context(
        self,
        principal: Principal,
        roles: frozenset[str] | None,
        channel: str,
        client_addr: str,
        target: Target,
        policies: tuple[Policy, ...],
    ) -> dict[str, Mapping[str, Any]]:
        user = {
            **principal.attributes,
            "id": principal.id,
            "name": principal.name,
            "roles": roles if roles is not None else principal.roles,
            "auth_method": principal.kind,
        }
        env: dict[str, Any] = {"channel": channel, "client_address": client_addr or None}
        if any(policy.reads_time for policy in policies):  # the clock only when a policy reads it
            now = self.clock.now().astimezone(self.zone)
            env["current_time"] = now.time()
            env["current_day"] = _DAYS[now.weekday()]
            env["current_date"] = now.date().isoformat()
        return {"user": user, "resource": target.attributes, "env": env}

    def _sync(self) -> None:
        versions = self._current_versions()
        if versions != self._versions:
            self._versions = versions
            self._rbac.clear()
            self._allowed.clear()

    def _current_versions(self) -> tuple[int, int, int, int]:
        # The objects' identities too: another book with as many changes is not the same book.
        book, policies = self.book, self.policies
        return (
            id(book),
            book.version if book is not None else 0,
            id(policies),
            policies.version if policies is not None else 0,
        )
