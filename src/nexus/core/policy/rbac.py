"""Roles: their permissions, their inheritance, who holds them, and the matcher compiled per role set.

`RoleBook` is the policy model and its storage; `Grants` is one role set's permissions indexed so a
decision is a few dictionary lookups. Every change bumps `version`, which drops compiled sets.
Imports only core and errors.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nexus.core.auth.model import username_key
from nexus.core.policy.memo import memo_table, remember
from nexus.core.policy.permission import CHANNELS, WILDCARD, Permission, parse_permission
from nexus.core.types import Principal
from nexus.errors import ConfigurationError

READ = "read"
_ROLE_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_CACHE_LIMIT = 16_384


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    permissions: tuple[Permission, ...]
    inherits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Grant:
    """Why a role set may act: the role and the permission that matched."""

    role: str
    permission: Permission

    def __str__(self) -> str:
        return f"role {self.role!r} grants {self.permission.text!r}"


class Grants:
    """The permissions of one role set, indexed by channel and action.

    `keys` passed to `match` are the names of the target (workflow name, tags, the channel's word
    for workflows, or a surface name) followed by `*`, so a wildcard resource is one more lookup.
    """

    __slots__ = ("_any_action", "_by_action", "roles")

    def __init__(self, roles: Iterable[Role], effective: frozenset[str]) -> None:
        self.roles = effective
        self._by_action: dict[tuple[str, str], dict[str, Grant]] = {}
        # Any action implies read: whoever may run or administer a thing may see it.
        self._any_action: dict[str, dict[str, Grant]] = {}
        for role in sorted(roles, key=lambda r: r.name):
            for permission in role.permissions:
                grant = Grant(role.name, permission)
                channels = CHANNELS if permission.channel == WILDCARD else (permission.channel,)
                for channel in channels:
                    table = self._by_action.setdefault((channel, permission.action), {})
                    table.setdefault(permission.resource, grant)
                    self._any_action.setdefault(channel, {}).setdefault(permission.resource, grant)

    def match(self, channel: str, action: str, keys: tuple[str, ...]) -> Grant | None:
        """The first permission allowing `action` on any of `keys` over `channel`, else None."""
        if action == READ:
            return _first(self._any_action.get(channel), keys)
        return _first(self._by_action.get((channel, action)), keys) or _first(
            self._by_action.get((channel, WILDCARD)), keys
        )


def _first(table: Mapping[str, Grant] | None, keys: tuple[str, ...]) -> Grant | None:
    if table:
        for key in keys:
            grant = table.get(key)
            if grant is not None:
                return grant
    return None


class RoleBook:
    """Roles by name and who holds them; roles are also carried by principals (user records,
    directory groups mapped at login, API keys). Changes take effect on the next decision."""

    def __init__(self) -> None:
        self._roles: dict[str, Role] = {}
        self._users: dict[str, set[str]] = {}
        self._groups: dict[str, set[str]] = {}
        self._keys: dict[str, set[str]] = {}
        self.version = 0
        self._effective: OrderedDict[tuple[object, ...], frozenset[str]] = memo_table()
        self._grants: OrderedDict[frozenset[str], Grants] = memo_table()
        # Changes may come from another thread than the serving loop's: a change and a cache fill
        # never interleave, so no view compiled from old roles is stored after a change.
        self._lock = threading.Lock()

    # -- the model ---------------------------------------------------------------------------------

    def define(self, name: str, permissions: Iterable[str], inherits: Iterable[str] = ()) -> Role:
        """Create a role; its parents must exist already (so inheritance can have no cycle).

        Raises:
            ConfigurationError: a bad name, an existing role, an unknown parent, a bad permission.
        """
        _check_name(name)
        for what, value in (("permissions", permissions), ("inherits", inherits)):
            if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
                raise ConfigurationError(f"{what} of role {name!r} must be a list of strings.")
        parsed = tuple(parse_permission(text) for text in permissions)
        parents = tuple(dict.fromkeys(inherits))
        with self._lock:
            if name in self._roles:
                raise ConfigurationError(
                    f"A role named {name!r} exists already; delete it first to redefine it."
                )
            unknown = [parent for parent in parents if parent not in self._roles]
            if unknown:
                raise ConfigurationError(f"Role {name!r} inherits from undefined role(s) {unknown!r}.")
            role = Role(name, parsed, parents)
            self._roles[name] = role
            self._changed()
        return role

    def remove(self, name: str) -> bool:
        """Delete a role; refused while another role inherits from it."""
        with self._lock:
            heirs = sorted(role.name for role in self._roles.values() if name in role.inherits)
            if heirs:
                raise ConfigurationError(f"Role {name!r} cannot be deleted: {heirs!r} inherit from it.")
            removed = self._roles.pop(name, None) is not None
            self._changed()
        return removed

    def assign(
        self, role: str, *, user: str | None = None, group: str | None = None, api_key: str | None = None
    ) -> None:
        """Give `role` to a username, a directory group (the `groups` attribute) or an API key id."""
        _check_name(role)
        with self._lock:
            for holders, holder in self._holders(user, group, api_key):
                holders.setdefault(holder, set()).add(role)
            self._changed()

    def unassign(
        self, role: str, *, user: str | None = None, group: str | None = None, api_key: str | None = None
    ) -> None:
        with self._lock:
            for holders, holder in self._holders(user, group, api_key):
                holders.get(holder, set()).discard(role)
            self._changed()

    def get(self, name: str) -> Role | None:
        return self._roles.get(name)

    def all(self) -> list[Role]:
        return sorted(self._roles.values(), key=lambda r: r.name)

    def assignments(self) -> dict[str, dict[str, list[str]]]:
        """Who holds which role by assignment (not counting roles the principals carry)."""
        return {
            kind: {holder: sorted(roles) for holder, roles in sorted(table.items()) if roles}
            for kind, table in (("users", self._users), ("groups", self._groups), ("api_keys", self._keys))
        }

    def to_document(self) -> dict[str, Any]:
        """Roles and assignments as JSON-ready data (the format `from_document` reads)."""
        roles = {
            role.name: {"permissions": [p.text for p in role.permissions], "inherits": list(role.inherits)}
            for role in self.all()
        }
        return {"roles": roles, "assignments": self.assignments()}

    @classmethod
    def from_document(cls, document: object) -> RoleBook:
        """A book from `to_document`'s format; parents may be listed after their heirs."""
        book = cls()
        _known(document, "the role document", ("roles", "assignments"))
        pending = dict(_mapping(_mapping(document, "the role document").get("roles", {}), "roles"))
        for name, spec in pending.items():
            _known(spec, f"role {name!r}", ("permissions", "inherits"))
        for name in _parents_first(pending):
            spec = _mapping(pending[name], f"role {name!r}")
            book.define(name, spec.get("permissions", []), _parents(name, spec))
        assignments = _mapping(_mapping(document, "the role document").get("assignments", {}), "assignments")
        _known(assignments, "assignments", ("users", "groups", "api_keys"))
        for kind, holder_key in (("users", "user"), ("groups", "group"), ("api_keys", "api_key")):
            for holder, held in _mapping(assignments.get(kind, {}), kind).items():
                if not isinstance(held, list):
                    raise ConfigurationError(f"assignments.{kind}.{holder} must be a list of role names.")
                for role in held:
                    book.assign(role, **{holder_key: holder})
        return book

    # -- compiled views ----------------------------------------------------------------------------

    def roles_of(self, principal: Principal) -> frozenset[str]:
        """Every role `principal` holds: carried, assigned, and inherited."""
        groups = _groups_of(principal)
        key = (principal.id, principal.kind, principal.name, principal.roles, groups)
        found = self._effective.get(key)
        if found is None:
            with self._lock:
                found = self._closure(self._direct(principal, groups))
                remember(self._effective, key, found, _CACHE_LIMIT)
        return found

    def grants(self, roles: frozenset[str]) -> Grants:
        """The matcher for one (effective) role set, compiled once per version."""
        found = self._grants.get(roles)
        if found is None:
            with self._lock:
                found = Grants([self._roles[name] for name in roles if name in self._roles], roles)
                remember(self._grants, roles, found, _CACHE_LIMIT)
        return found

    def _direct(self, principal: Principal, groups: tuple[str, ...]) -> set[str]:
        held = set(principal.roles)
        if principal.kind == "api_key":
            held |= self._keys.get(principal.id.removeprefix("key:"), set())
        elif not principal.is_anonymous and principal.name:
            held |= self._users.get(username_key(principal.name), set())
        for group in groups:
            held |= self._groups.get(group, set())
        return held

    def _closure(self, held: set[str]) -> frozenset[str]:
        pending = list(held)
        while pending:
            role = self._roles.get(pending.pop())
            for parent in role.inherits if role is not None else ():
                if parent not in held:
                    held.add(parent)
                    pending.append(parent)
        return frozenset(held)

    def _holders(
        self, user: str | None, group: str | None, api_key: str | None
    ) -> list[tuple[dict[str, set[str]], str]]:
        chosen = [
            (table, holder)
            for table, holder in (
                (self._users, username_key(user) if isinstance(user, str) else user),
                (self._groups, group),
                (self._keys, api_key),
            )
            if holder is not None
        ]
        if len(chosen) != 1 or not all(isinstance(holder, str) and holder for _, holder in chosen):
            raise ConfigurationError(
                "Name exactly one holder: user=..., group=... or api_key=... (a non-empty string)."
            )
        return chosen

    def _changed(self) -> None:
        self.version += 1
        self._effective.clear()
        self._grants.clear()


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{what} must be an object, not {type(value).__name__}.")
    return value


def _parents_first(specs: Mapping[str, object]) -> list[str]:
    """Role names ordered so each comes after its parents (Kahn's algorithm, linear in the roles).

    Raises:
        ConfigurationError: a parent that is not in `specs`, or a cycle.
    """
    heirs: dict[str, list[str]] = {name: [] for name in specs}
    waiting: dict[str, int] = {}
    for name, spec in specs.items():
        parents = set(_parents(name, spec))
        unknown = sorted(parents - heirs.keys())
        if unknown:
            raise ConfigurationError(f"Role {name!r} inherits from undefined role(s) {unknown!r}.")
        waiting[name] = len(parents)
        for parent in parents:
            heirs[parent].append(name)
    ready = [name for name, count in waiting.items() if count == 0]
    ordered: list[str] = []
    while ready:
        name = ready.pop()
        ordered.append(name)
        for heir in heirs[name]:
            waiting[heir] -= 1
            if waiting[heir] == 0:
                ready.append(heir)
    if len(ordered) < len(specs):
        looping = sorted(name for name, count in waiting.items() if count > 0)
        raise ConfigurationError(f"Roles {looping} inherit from each other.")
    return ordered


def _known(value: object, what: str, keys: tuple[str, ...]) -> None:
    unknown = sorted(str(key) for key in _mapping(value, what) if key not in keys)
    if unknown:
        raise ConfigurationError(f"{what} has unknown key(s) {unknown}; known: {list(keys)}.")


def _parents(name: str, spec: object) -> list[str]:
    parents = _mapping(spec, f"role {name!r}").get("inherits", [])
    if not isinstance(parents, list) or not all(isinstance(parent, str) for parent in parents):
        raise ConfigurationError(f"inherits of role {name!r} must be a list of role names.")
    return parents


def _groups_of(principal: Principal) -> tuple[str, ...]:
    groups = principal.attributes.get("groups")
    if isinstance(groups, str):
        return (groups,)
    if isinstance(groups, (list, tuple, set, frozenset)):
        return tuple(sorted(str(group) for group in groups))
    return ()


def _check_name(name: object) -> None:
    if not isinstance(name, str) or _ROLE_NAME.fullmatch(name) is None:
        raise ConfigurationError(f"Invalid role name {name!r}: 1 to 128 characters, no control characters.")
