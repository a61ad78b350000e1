"""Policies: a compiled condition, where it applies (channels, resources, actions), and its effect.

A policy applies to a request when its channel, one of its resources and (when it names them) its
action match. It is satisfied when a `permit` condition holds or a `deny` condition does not; a
condition that cannot be decided (a missing attribute) satisfies neither. Imports core and errors.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nexus.core.policy.condition import Condition, compile_condition
from nexus.core.policy.memo import memo_table, remember
from nexus.core.policy.permission import ACTION, CHANNELS, WILDCARD
from nexus.errors import ConfigurationError

EFFECTS = ("permit", "deny")
READ = "read"
_KEYS = frozenset({"condition", "channels", "resources", "effect", "actions", "description"})
_REQUIRED = ("condition", "effect")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")
_CACHE_LIMIT = 65_536
_TIME_PATHS = frozenset({"env.current_time", "env.current_day", "env.current_date"})


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    condition: Condition
    channels: frozenset[str]
    resources: frozenset[str]
    effect: str
    actions: frozenset[str] = frozenset({WILDCARD})
    description: str = ""
    permits: bool = field(init=False)
    """The condition value that satisfies this policy: True for permit, False for deny."""
    reads_time: bool = field(init=False)
    """Whether the condition reads the time (so the clock is read only for such policies)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "permits", self.effect == "permit")
        object.__setattr__(self, "reads_time", not _TIME_PATHS.isdisjoint(self.condition.paths))

    def applies(self, channel: str, action: str, keys: tuple[str, ...]) -> bool:
        """`keys` are the target's names followed by `*` (see `Grants.match`)."""
        if WILDCARD not in self.channels and channel not in self.channels:
            return False
        # A policy on reading governs every action too: whoever may not see a thing may not use it.
        actions = self.actions
        if WILDCARD not in actions and action not in actions and READ not in actions:
            return False
        resources = self.resources
        return WILDCARD in resources or not resources.isdisjoint(keys)

    def to_spec(self) -> dict[str, Any]:
        """The policy as `add_policy` takes it."""
        spec: dict[str, Any] = {
            "condition": self.condition.text,
            "channels": sorted(self.channels),
            "resources": sorted(self.resources),
            "effect": self.effect,
        }
        if WILDCARD not in self.actions:
            spec["actions"] = sorted(self.actions)
        if self.description:
            spec["description"] = self.description
        return spec


@dataclass(frozen=True, slots=True)
class Verdict:
    """One applicable policy's outcome: `held` is the condition's value (None: undecided)."""

    policy: Policy
    held: bool | None

    @property
    def satisfied(self) -> bool:
        return self.held is self.policy.permits

    def describe(self, missing: Iterable[str] = ()) -> str:
        name, effect = self.policy.name, self.policy.effect
        if self.held is None:
            absent = ", ".join(missing)
            why = f"missing {absent}" if absent else "attribute of the wrong type"
            return f"policy {name!r} ({effect}) undecided: {why}"
        return f"policy {name!r} ({effect}) {'held' if self.held else 'did not hold'}"


def parse_policy(name: object, spec: object) -> Policy:
    """Check and compile a policy as the source document writes it.

    Raises:
        ConfigurationError: unknown keys, bad channels, resources, actions or effect, or a condition
            that does not parse (the message names the line and column).
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigurationError(f"Invalid policy name {name!r}: letters, digits and '_.:-', at most 64.")
    if not isinstance(spec, Mapping):
        raise ConfigurationError(
            f"Policy {name!r} must be a dict with condition, channels, resources, effect."
        )
    unknown = sorted(str(key) for key in spec if key not in _KEYS)
    if unknown:
        raise ConfigurationError(f"Policy {name!r} has unknown key(s) {unknown}; known: {sorted(_KEYS)}.")
    absent = [key for key in _REQUIRED if key not in spec]
    if absent:
        raise ConfigurationError(f"Policy {name!r} needs {', '.join(absent)}.")
    effect = spec["effect"]
    if effect not in EFFECTS:
        raise ConfigurationError(f"Policy {name!r}: effect is 'permit' or 'deny', not {effect!r}.")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise ConfigurationError(f"Policy {name!r}: description is a string.")
    try:
        condition = compile_condition(spec["condition"])
    except ConfigurationError as error:
        raise ConfigurationError(f"Policy {name!r}: {error.message}") from error
    return Policy(
        name=name,
        condition=condition,
        channels=_names(name, "channels", spec.get("channels", [WILDCARD]), lambda c: c in CHANNELS),
        resources=_names(name, "resources", spec.get("resources", [WILDCARD]), _NAME.fullmatch),
        effect=effect,
        actions=_names(name, "actions", spec.get("actions", [WILDCARD]), ACTION.fullmatch),
        description=description,
    )


def _names(policy: str, key: str, value: object, valid: Any) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)) or not value:
        raise ConfigurationError(f"Policy {policy!r}: {key} is a non-empty list of names (or ['*']).")
    bad = [item for item in value if not isinstance(item, str) or (item != WILDCARD and not valid(item))]
    if bad:
        raise ConfigurationError(f"Policy {policy!r}: invalid {key} {bad!r}.")
    return frozenset(value)


class PolicySet:
    """Named policies, in the order added, indexed by channel and resource for `applicable`."""

    def __init__(self) -> None:
        self._policies: dict[str, Policy] = {}
        self.version = 0
        self._index: dict[tuple[str, str], list[tuple[int, Policy]]] | None = {}
        self._applicable: OrderedDict[tuple[str, str, tuple[str, ...]], tuple[Policy, ...]] = memo_table()
        self._lock = threading.Lock()  # changes may come from another thread than the serving loop

    def add(self, name: str, spec: Mapping[str, Any]) -> Policy:
        policy = parse_policy(name, spec)
        with self._lock:
            if name in self._policies:
                raise ConfigurationError(
                    f"A policy named {name!r} exists already; remove it first to replace it."
                )
            self._policies[name] = policy
            self._changed()
        return policy

    def remove(self, name: str) -> bool:
        with self._lock:
            removed = self._policies.pop(name, None) is not None
            self._changed()
        return removed

    def all(self) -> list[Policy]:
        with self._lock:
            return list(self._policies.values())

    def __len__(self) -> int:
        return len(self._policies)

    def applicable(self, channel: str, action: str, keys: tuple[str, ...]) -> tuple[Policy, ...]:
        """The policies that apply, in the order added; `keys` end with `*` (see `Grants.match`)."""
        cache_key = (channel, action, keys)
        found = self._applicable.get(cache_key)
        if found is None:
            with self._lock:
                found = remember(
                    self._applicable, cache_key, self._lookup(channel, action, keys), _CACHE_LIMIT
                )
        return found

    def _lookup(self, channel: str, action: str, keys: tuple[str, ...]) -> tuple[Policy, ...]:
        index = self._index
        if index is None:  # built on first use after changes, so adding n policies stays linear
            index = self._index = self._build_index()
        candidates: dict[int, Policy] = {}
        for named in (channel, WILDCARD):
            for key in keys:
                candidates.update(index.get((named, key), ()))
        return tuple(p for _, p in sorted(candidates.items()) if p.applies(channel, action, keys))

    def to_document(self) -> dict[str, Any]:
        return {"policies": {policy.name: policy.to_spec() for policy in self.all()}}

    @classmethod
    def from_document(cls, document: object) -> PolicySet:
        """A set from `to_document`'s format: {"policies": {name: spec, ...}}."""
        policies = document.get("policies", {}) if isinstance(document, Mapping) else None
        if not isinstance(policies, Mapping):
            raise ConfigurationError('The policy document must be {"policies": {name: {...}, ...}}.')
        found = cls()
        for name, spec in policies.items():
            found.add(name, spec)
        return found

    def _changed(self) -> None:
        self.version += 1
        self._applicable.clear()
        self._index = None

    def _build_index(self) -> dict[tuple[str, str], list[tuple[int, Policy]]]:
        index: dict[tuple[str, str], list[tuple[int, Policy]]] = {}
        for position, policy in enumerate(self._policies.values()):
            for channel in policy.channels:
                for resource in policy.resources:
                    index.setdefault((channel, resource), []).append((position, policy))
        return index
