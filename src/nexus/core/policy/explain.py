"""Explain a decision for someone else, optionally under draft roles and policies ("what if").

The caller names a user, an API key or a set of roles and attributes; the explainer builds that
principal from the stores and asks the decision point, or one built from the draft, leaving the
installed roles and policies untouched. Imports core and errors only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nexus.core.auth.ports import UserStore
from nexus.core.authorization import ALLOW_ALL, Authorizer
from nexus.core.catalog import Catalog
from nexus.core.policy.abac import PolicySet
from nexus.core.policy.decision import PolicyAuthorizer
from nexus.core.policy.permission import ACTION, CHANNELS
from nexus.core.policy.rbac import RoleBook
from nexus.core.ports import Clock, KeyStore
from nexus.core.types import Channel, Invocation, Principal
from nexus.errors import ConfigurationError, InvalidInputError

_FIELDS = frozenset(
    {
        "user",
        "api_key",
        "roles",
        "attributes",
        "workflow",
        "surface",
        "channel",
        "action",
        "client_address",
        "draft",
    }
)
_SURFACES = ("resources", "health", "authz", "tenants")
MAX_ROLES = 100
MAX_DRAFT_ROLES = 10_000
MAX_DRAFT_POLICIES = 1_000


@dataclass(frozen=True, slots=True)
class ExplainQuery:
    """Who (`user`, `api_key`, or `roles` with `attributes`), where, what, and an optional draft."""

    channel: str
    action: str
    workflow: str | None = None
    surface: str | None = None
    user: str | None = None
    api_key: str | None = None
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    client_address: str = ""
    draft: Mapping[str, Any] | None = None
    """{"rbac": <RoleBook document>, "abac": <PolicySet document>}; each part replaces the installed one."""

    def summary(self, answer: Mapping[str, Any]) -> str:
        """For the audit: whose access was looked at, where, and the outcome (never attribute values)."""
        if self.user is not None:
            who = f"user {self.user[:64]!r}"
        elif self.api_key is not None:
            who = f"API key {self.api_key[:64]!r}"
        else:
            who = f"roles {sorted(self.roles)!r}"
        extra = " with given attributes" if self.attributes else ""
        what = f"workflow {self.workflow[:64]!r}" if self.workflow else f"the {self.surface} surface"
        draft = " under a draft" if self.draft is not None else ""
        outcome = answer.get("outcome", "?")
        return f"explained {who}{extra}: {self.channel}:{self.action} on {what}{draft} -> {outcome}"

    @classmethod
    def from_document(cls, body: Mapping[str, Any]) -> ExplainQuery:
        """Read a request body; every fault is an `InvalidInputError` naming the field."""
        unknown = sorted(str(key) for key in body if key not in _FIELDS)
        if unknown:
            raise InvalidInputError(f"Unknown field(s) {unknown}; known: {sorted(_FIELDS)}.")
        channel, action = body.get("channel"), body.get("action", "read")
        if channel not in CHANNELS:
            raise InvalidInputError(f"channel must be one of {', '.join(CHANNELS)}.")
        if not isinstance(action, str) or ACTION.fullmatch(action) is None:
            raise InvalidInputError("action must be a word such as read or execute (lowercase, up to 32).")
        surface = body.get("surface")
        if surface is not None and surface not in _SURFACES:
            raise InvalidInputError(
                f"surface must be one of {', '.join(_SURFACES)}, or absent for workflows."
            )
        if body.get("workflow") is None and surface in (None, "resources"):
            raise InvalidInputError("Name a workflow, or a surface such as health.")
        who = [name for name in ("user", "api_key") if body.get(name) is not None]
        if len(who) > 1:
            raise InvalidInputError("Name a user or an API key, not both.")
        return cls(
            channel=channel,
            action=action,
            workflow=_text(body, "workflow"),
            surface=surface,
            user=_text(body, "user"),
            api_key=_text(body, "api_key"),
            roles=_roles(body.get("roles", [])),
            attributes=MappingProxyType(dict(_object(body, "attributes"))),
            client_address=_text(body, "client_address") or "",
            draft=_object(body, "draft") if "draft" in body else None,
        )


class Explainer:
    """Answers `ExplainQuery`s against the decision point in force (`current()`) or a draft."""

    def __init__(
        self,
        catalog: Catalog,
        current: Callable[[], Authorizer],
        clock: Clock,
        *,
        keys: KeyStore,
        users: UserStore | None,
    ) -> None:
        self._catalog = catalog
        self._current = current
        self._clock = clock
        self._keys = keys
        self._users = users

    async def explain(self, query: ExplainQuery) -> dict[str, Any]:
        principal = await self._principal(query)
        info = (
            self._catalog.get(query.workflow).info
            if query.workflow and query.surface in (None, "resources")
            else None
        )
        asked = Invocation(
            request_id="explain",
            channel=Channel(query.channel),
            workflow=query.workflow or f"_{query.surface}",
            inputs={},
            principal=principal,
            action=query.action,
            surface=query.surface,
            client_addr=query.client_address,
        )
        if query.draft is None:
            authorizer = self._current()
        else:  # compiling a draft is CPU work the size of the draft: off the serving loop
            authorizer = await asyncio.to_thread(self._authorizer, query.draft)
        if not isinstance(authorizer, PolicyAuthorizer):
            document = {"outcome": "allow", "allowed": True, "visible": True, "reason": ALLOW_ALL.reason}
        else:
            document = authorizer.explain(asked, info).to_document()
        document["principal"] = {"id": principal.id, "name": principal.name, "kind": principal.kind}
        document["draft"] = query.draft is not None
        return document

    def _authorizer(self, draft: Mapping[str, Any]) -> Authorizer:
        """A decision point for the draft's parts, the installed ones for the parts it leaves out."""
        current = self._current()
        unknown = sorted(str(key) for key in draft if key not in ("rbac", "abac"))
        if unknown:
            raise InvalidInputError(f"A draft has rbac and abac parts, not {unknown}.")
        for part, inner, limit in (
            ("rbac", "roles", MAX_DRAFT_ROLES),
            ("abac", "policies", MAX_DRAFT_POLICIES),
        ):
            entries = draft[part].get(inner, ()) if isinstance(draft.get(part), Mapping) else ()
            if hasattr(entries, "__len__") and len(entries) > limit:
                raise InvalidInputError(f"A draft holds at most {limit} {inner}.")
        installed = current if isinstance(current, PolicyAuthorizer) else None
        try:
            book = RoleBook.from_document(draft["rbac"]) if "rbac" in draft else installed and installed.book
            policies = (
                PolicySet.from_document(draft["abac"])
                if "abac" in draft
                else installed and installed.policies
            )
        except ConfigurationError as error:
            raise InvalidInputError(f"The draft is not valid: {error.message}") from error
        clock = installed.clock if installed is not None else self._clock
        zone = installed.zone if installed is not None else UTC
        if isinstance(draft.get("abac"), Mapping) and "time_zone" in draft["abac"]:
            zone = _zone(draft["abac"]["time_zone"])
        return PolicyAuthorizer(book or None, policies or None, clock, zone)

    async def _principal(self, query: ExplainQuery) -> Principal:
        extra = dict(query.attributes)
        if query.user is not None:
            user = await self._users.find(query.user) if self._users is not None else None
            if user is None:
                raise InvalidInputError(f"No user named {query.user[:64]!r}.")
            roles = user.roles | frozenset(query.roles)
            attributes = {**user.attributes, **extra}
            # The method a login of this user records (auth_method in conditions): "password" for
            # local accounts, else the provider's name.
            method = "password" if user.source == "local" else user.source
            return Principal(
                id=user.user_id, kind=method, roles=roles, attributes=attributes, name=user.username
            )
        if query.api_key is not None:
            key = await self._keys.get(query.api_key)
            if key is None or key.is_revoked:
                raise InvalidInputError(f"No active API key with id {query.api_key[:64]!r}.")
            attributes = {"name": key.name, **extra}
            roles = key.roles | frozenset(query.roles)
            return Principal(
                id=f"key:{key.key_id}", kind="api_key", roles=roles, attributes=attributes, name=key.name
            )
        return Principal(id="explain", kind="explain", roles=frozenset(query.roles), attributes=extra)


def _zone(name: object) -> tzinfo:
    text = str(name)
    try:
        if len(text) > 64:
            raise ValueError(text)
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidInputError(
            f"The draft's time_zone {str(name)[:64]!r} is not an IANA time zone."
        ) from exc


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not value or len(value) > 256):
        raise InvalidInputError(f"{name} must be a non-empty string of at most 256 characters.")
    return value


def _object(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name, {})
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{name} must be an object.")
    return value


def _roles(value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_ROLES
        or not all(isinstance(role, str) and 0 < len(role) <= 128 for role in value)
    ):
        raise InvalidInputError(f"roles must be a list of at most {MAX_ROLES} role names.")
    return tuple(value)
