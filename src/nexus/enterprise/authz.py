"""The source document's authorization classes: `RBACManager` and `ABACPolicyEngine`.

Thin wrappers over `nexus.core.policy`: they check what they are given at once and hold the role
book and the policy set the decision point reads. Changes made while serving take effect on the
next call. Both export and import documents, which `nexus authz explain --draft` evaluates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nexus.core.policy.abac import Policy, PolicySet
from nexus.core.policy.rbac import Role, RoleBook
from nexus.errors import ConfigurationError


class RBACManager:
    """Roles with channel-scoped permissions `channel:action:resource`, inheritance and assignments.

    A principal holds the roles it carries (a user record, directory groups mapped at login, an API
    key's roles) plus the roles assigned here to its username, one of its groups or its key id,
    plus every role those inherit from.
    """

    def __init__(self) -> None:
        self._book = RoleBook()

    @property
    def book(self) -> RoleBook:
        """The roles the decision point reads (the same object for the manager's whole life)."""
        return self._book

    def create_role(
        self, name: str, permissions: Iterable[str] = (), *, inherits: Iterable[str] = ()
    ) -> Role:
        """Define a role; a malformed permission fails here with the position of the fault."""
        return self.book.define(name, permissions, inherits)

    def delete_role(self, name: str) -> bool:
        return self.book.remove(name)

    def assign_role(
        self, role: str, *, user: str | None = None, group: str | None = None, api_key: str | None = None
    ) -> None:
        """Give `role` to a username, a group (the `groups` attribute of an identity) or an API key id."""
        self.book.assign(role, user=user, group=group, api_key=api_key)

    def unassign_role(
        self, role: str, *, user: str | None = None, group: str | None = None, api_key: str | None = None
    ) -> None:
        self.book.unassign(role, user=user, group=group, api_key=api_key)

    def roles(self) -> list[Role]:
        return self.book.all()

    def to_document(self) -> dict[str, Any]:
        """Roles and assignments as JSON-ready data (the format `from_document` reads)."""
        return self.book.to_document()

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> RBACManager:
        manager = cls()
        manager._book = RoleBook.from_document(document)
        return manager


class Clock(Protocol):
    def now(self) -> datetime: ...


class ABACPolicyEngine:
    """Policies: a condition, the channels and resources it applies to, and its effect.

    `time_zone` is where `current_time` and `current_day` are read (an IANA name); `clock` is an
    object with `now()` returning an aware datetime, for tests that need a controlled time.
    """

    def __init__(self, *, time_zone: str = "UTC", clock: Clock | None = None) -> None:
        try:
            self.zone: tzinfo = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigurationError(
                f"Unknown time zone {time_zone!r}; use an IANA name like 'Europe/Paris'."
            ) from exc
        self.time_zone = time_zone
        self.clock = clock
        """Read at every decision, so a test may swap it while serving."""
        self._policies = PolicySet()

    @property
    def policies(self) -> PolicySet:
        """The policies the decision point reads (the same object for the engine's whole life)."""
        return self._policies

    def now(self) -> datetime:
        """The time policies see: `clock.now()` when a clock is given, else the system's."""
        return self.clock.now() if self.clock is not None else datetime.now(UTC)

    def add_policy(self, name: str, policy: Mapping[str, Any]) -> Policy:
        """Add a policy: `condition` (parsed and compiled now), `channels` and `resources` (names or
        "*", all when absent), `effect` ("permit" or "deny"), optionally `actions` and `description`."""
        return self.policies.add(name, policy)

    def remove_policy(self, name: str) -> bool:
        return self.policies.remove(name)

    def to_document(self) -> dict[str, Any]:
        return {"time_zone": self.time_zone, **self.policies.to_document()}

    @classmethod
    def from_document(cls, document: Mapping[str, Any], *, clock: Clock | None = None) -> ABACPolicyEngine:
        engine = cls(time_zone=str(document.get("time_zone", "UTC")), clock=clock)
        engine._policies = PolicySet.from_document(document)
        return engine
