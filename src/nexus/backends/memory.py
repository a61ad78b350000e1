"""In-process stores: the embedded defaults for tests and single-process demos.

API keys, audit records, the identity stores (users, second factors, sessions, signing keys) and the
tenant registry.
Same semantics as the SQL stores, nothing survives the process. Imports only core types and errors.
"""

from __future__ import annotations

import heapq
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from nexus.core.audit_chain import (
    AuditVerification,
    ChainLink,
    ChainState,
    ChainVerifier,
    extend,
    purgeable,
    record_values,
)
from nexus.core.auth.model import Factor, FactorKind, Session, SigningKey, User, username_key
from nexus.core.tenancy.model import Tenant, TenantStatus
from nexus.core.types import ApiKey, AuditRecord, Channel
from nexus.errors import (
    AuditIntegrityError,
    ConfigurationError,
    DependencyUnavailableError,
    InvalidInputError,
    TenantConflictError,
)

DEFAULT_MAX_AUDIT_RECORDS: Final = 10_000


def _as_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


class MemoryKeyStore:
    """API keys in a dict; operations never await, so each is atomic on its loop."""

    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}

    async def add(self, key: ApiKey) -> None:
        """Store a new key.

        Raises:
            InvalidInputError: a key with this id already exists.
        """
        if key.key_id in self._keys:
            raise InvalidInputError(f"An API key with id {key.key_id!r} already exists.")
        revoked_at = None if key.revoked_at is None else _as_utc(key.revoked_at, "revoked_at")
        self._keys[key.key_id] = replace(
            key,
            created_at=_as_utc(key.created_at, "created_at"),
            revoked_at=revoked_at,
            tenants=frozenset(key.tenants),
        )

    async def get(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    async def list(self) -> Sequence[ApiKey]:
        """Every key, oldest first."""
        return sorted(self._keys.values(), key=lambda key: (key.created_at, key.key_id))

    async def revoke(self, key_id: str, at: datetime) -> bool:
        """Mark the key revoked at `at`; an earlier revocation time is kept. False if no such key."""
        revoked_at = _as_utc(at, "at")
        key = self._keys.get(key_id)
        if key is None:
            return False
        if key.revoked_at is None:
            self._keys[key_id] = replace(key, revoked_at=revoked_at)
        return True


@dataclass(frozen=True, slots=True)
class _Chained:
    record: AuditRecord
    link: ChainLink


class MemoryAuditSink:
    """The newest `max_records` audit records, hash-chained; older ones are dropped first, and the
    chain's anchor moves past them as a purge's does."""

    def __init__(self, *, max_records: int = DEFAULT_MAX_AUDIT_RECORDS) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self._records: deque[_Chained] = deque()
        self._max_records = max_records
        self._chain = ChainState()
        self._closed = False

    async def record(self, record: AuditRecord) -> None:
        if self._closed:
            raise DependencyUnavailableError("The audit trail is closed; the call was not recorded.")
        stored = replace(record, time=_as_utc(record.time, "AuditRecord.time"))
        values = record_values(stored)
        [(seq, prev, digest)] = extend(self._chain.tail_seq, self._chain.tail_hash, [values])
        self._records.append(_Chained(stored, ChainLink(seq, prev, digest, values)))
        self._chain = replace(self._chain, tail_seq=seq, tail_hash=digest)
        if len(self._records) > self._max_records:
            self._drop(len(self._records) - self._max_records)

    async def query(
        self,
        *,
        workflow: str | None = None,
        principal_id: str | None = None,
        tenant_id: str | None = None,
        limit: int = 100,
    ) -> Sequence[AuditRecord]:
        """Newest first; records with equal times come latest-recorded first, as in SQL."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        matches = [
            record
            for record in (entry.record for entry in reversed(self._records))
            if (workflow is None or record.workflow == workflow)
            and (principal_id is None or record.principal_id == principal_id)
            and (tenant_id is None or record.tenant_id == tenant_id)
        ]
        # sorted() is stable, so ties keep the latest-recorded-first order built above.
        return sorted(matches, key=lambda record: record.time, reverse=True)[:limit]

    async def purge(self, before: datetime) -> int:
        """Delete the leading records stamped before `before`; how many went."""
        cutoff = _as_utc(before, "before")
        links = [entry.link for entry in self._records]
        count = purgeable(links, cutoff)
        verifier = ChainVerifier(self._chain)
        if not all(verifier.feed(link) for link in links[:count]):
            raise AuditIntegrityError(f"The audit trail is broken, so nothing was purged: {verifier.reason}.")
        self._drop(count)
        return count

    async def verify(self) -> AuditVerification:
        verifier = ChainVerifier(self._chain)
        for entry in self._records:
            if not verifier.feed(entry.link):
                break
        return verifier.finish()

    async def close(self) -> None:
        """Refuse later records; there is nothing pending to commit."""
        self._closed = True

    def _drop(self, count: int) -> None:
        for _ in range(count):
            link = self._records.popleft().link
            self._chain = replace(self._chain, anchor_seq=link.seq, anchor_hash=link.hash or "")


def frozen_json(value: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    """A read-only copy of a JSON object, exactly as a JSON column would give it back."""
    try:
        copied = json.loads(json.dumps(dict(value)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must hold JSON values only") from exc
    return MappingProxyType(copied)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _optional_utc(value: datetime | None, what: str) -> datetime | None:
    return None if value is None else _as_utc(value, what)


class MemoryUserStore:
    """Users by id, with a case-insensitive username index."""

    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self._ids_by_name: dict[str, str] = {}

    async def add(self, user: User) -> None:
        """Store a new user.

        Raises:
            ConfigurationError: the username (in any letter case) or the user id is taken.
        """
        stored = _stored_user(user)
        name = username_key(user.username)
        if name in self._ids_by_name:
            raise ConfigurationError(f"The username {user.username!r} is already taken.")
        if user.user_id in self._users:
            raise ConfigurationError(f"A user with id {user.user_id!r} already exists.")
        self._users[user.user_id] = stored
        self._ids_by_name[name] = user.user_id

    async def get(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    async def find(self, username: str) -> User | None:
        """The user whose username matches in any letter case."""
        user_id = self._ids_by_name.get(username_key(username))
        return None if user_id is None else self._users[user_id]

    async def list(self) -> Sequence[User]:
        """Every user, by username."""
        return sorted(self._users.values(), key=lambda user: (username_key(user.username), user.user_id))

    async def update(self, user: User) -> None:
        """Replace the stored user with the same id.

        Raises:
            ConfigurationError: no such user, or the new username belongs to another user.
        """
        stored = _stored_user(user)
        old = self._users.get(user.user_id)
        if old is None:
            raise ConfigurationError(f"There is no user with id {user.user_id!r}.")
        name = username_key(user.username)
        if self._ids_by_name.get(name, user.user_id) != user.user_id:
            raise ConfigurationError(f"The username {user.username!r} is already taken.")
        del self._ids_by_name[username_key(old.username)]
        self._ids_by_name[name] = user.user_id
        self._users[user.user_id] = stored

    async def delete(self, user_id: str) -> bool:
        user = self._users.pop(user_id, None)
        if user is None:
            return False
        del self._ids_by_name[username_key(user.username)]
        return True


def _stored_user(user: User) -> User:
    return replace(
        user,
        roles=frozenset(user.roles),
        attributes=frozen_json(user.attributes, "User.attributes"),
        created_at=_as_utc(user.created_at, "created_at"),
        tenants=frozenset(user.tenants),
    )


class MemoryFactorStore:
    """Second factors by id; each check-and-set runs without awaiting, so it is atomic on its loop."""

    def __init__(self) -> None:
        self._factors: dict[str, Factor] = {}

    async def add(self, factor: Factor) -> None:
        """Store a new factor.

        Raises:
            InvalidInputError: the factor id, or the hardware key's credential id, is already stored.
        """
        stored = replace(
            factor,
            kind=FactorKind(factor.kind),
            created_at=_as_utc(factor.created_at, "created_at"),
            used_at=_optional_utc(factor.used_at, "used_at"),
        )
        if factor.factor_id in self._factors:
            raise InvalidInputError(f"A second factor with id {factor.factor_id!r} already exists.")
        if factor.credential_id is not None and any(
            other.credential_id == factor.credential_id for other in self._factors.values()
        ):
            raise InvalidInputError("This security key is already registered.")
        self._factors[factor.factor_id] = stored

    async def for_user(self, user_id: str) -> Sequence[Factor]:
        """The user's factors, oldest first."""
        factors = [factor for factor in self._factors.values() if factor.user_id == user_id]
        return sorted(factors, key=lambda factor: (factor.created_at, factor.factor_id))

    async def activate(self, factor_id: str) -> bool:
        """Mark the factor active; False if there is no such factor."""
        return self._change(factor_id, lambda _: True, active=True)

    async def advance_step(self, factor_id: str, step: int) -> bool:
        """Record TOTP step `step`; False when it, or a later one, already was (or no such factor)."""
        return self._change(factor_id, lambda factor: step > factor.last_step, last_step=step)

    async def advance_sign_count(self, factor_id: str, sign_count: int) -> bool:
        """Store a grown WebAuthn counter; a counter staying at 0 (keys without one) also passes."""
        return self._change(
            factor_id,
            lambda factor: sign_count > factor.sign_count or sign_count == factor.sign_count == 0,
            sign_count=sign_count,
        )

    async def use_once(self, factor_id: str, at: datetime) -> bool:
        """Mark a recovery code used at `at`; False when it already was (or no such factor)."""
        used_at = _as_utc(at, "at")
        return self._change(factor_id, lambda factor: factor.used_at is None, used_at=used_at)

    async def remove(self, factor_id: str) -> bool:
        return self._factors.pop(factor_id, None) is not None

    def _change(self, factor_id: str, allowed: Callable[[Factor], bool], **changes: Any) -> bool:
        factor = self._factors.get(factor_id)
        if factor is None or not allowed(factor):
            return False
        self._factors[factor_id] = replace(factor, **changes)
        return True


class MemorySessionStore:
    """Sessions by id. An expired session reads as unknown; a revoked one stays readable until then."""

    def __init__(self, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._now = clock
        self._sessions: dict[str, Session] = {}
        self._expiries: list[tuple[datetime, str]] = []

    async def create(self, session: Session) -> None:
        """Store a new session.

        Raises:
            InvalidInputError: a session with this id already exists.
        """
        stored = _stored_session(session)
        self._prune()
        if session.session_id in self._sessions:
            raise InvalidInputError("A session with this id already exists.")
        self._sessions[session.session_id] = stored
        heapq.heappush(self._expiries, (stored.expires_at, stored.session_id))

    async def get(self, session_id: str) -> Session | None:
        """The session until it expires, revoked or not; None when unknown or expired."""
        session = self._sessions.get(session_id)
        if session is None or session.expires_at <= self._now():
            return None
        return session

    async def reauthenticated(
        self,
        session_id: str,
        *,
        auth_time: datetime,
        mfa_time: datetime | None,
        mfa_channels: frozenset[Channel],
    ) -> bool:
        """Replace the proof times and MFA channels of a live session; False if it is not live."""
        proved_at = _as_utc(auth_time, "auth_time")
        mfa_at = _optional_utc(mfa_time, "mfa_time")
        channels = frozenset(Channel(channel) for channel in mfa_channels)
        session = self._sessions.get(session_id)
        if session is None or not session.is_live(self._now()):
            return False
        self._sessions[session_id] = replace(
            session, auth_time=proved_at, mfa_time=mfa_at, mfa_channels=channels
        )
        return True

    async def revoke(self, session_id: str, at: datetime) -> bool:
        """Mark the session revoked; the first revocation time is kept. False if unknown or expired."""
        revoked_at = _as_utc(at, "at")
        session = await self.get(session_id)
        if session is None:
            return False
        if session.revoked_at is None:
            self._sessions[session_id] = replace(session, revoked_at=revoked_at)
        return True

    async def revoke_user(self, user_id: str, at: datetime) -> int:
        """Revoke every live session of a user; how many there were."""
        revoked_at = _as_utc(at, "at")
        now = self._now()
        live = [s for s in self._sessions.values() if s.user_id == user_id and s.is_live(now)]
        for session in live:
            self._sessions[session.session_id] = replace(session, revoked_at=revoked_at)
        return len(live)

    async def close(self) -> None:
        self._sessions.clear()
        self._expiries.clear()

    def _prune(self) -> None:
        now = self._now()
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            expires_at, session_id = heapq.heappop(expiries)
            session = self._sessions.get(session_id)
            if session is not None and session.expires_at == expires_at:
                del self._sessions[session_id]


def _stored_session(session: Session) -> Session:
    return replace(
        session,
        roles=frozenset(session.roles),
        attributes=frozen_json(session.attributes, "Session.attributes"),
        created_at=_as_utc(session.created_at, "created_at"),
        expires_at=_as_utc(session.expires_at, "expires_at"),
        auth_time=_as_utc(session.auth_time, "auth_time"),
        origin_channel=Channel(session.origin_channel),
        mfa_time=_optional_utc(session.mfa_time, "mfa_time"),
        mfa_channels=frozenset(Channel(channel) for channel in session.mfa_channels),
        revoked_at=_optional_utc(session.revoked_at, "revoked_at"),
        tenants=frozenset(session.tenants),
    )


class MemorySigningKeyStore:
    """Token signing keys by kid."""

    def __init__(self) -> None:
        self._keys: dict[str, SigningKey] = {}

    async def list(self) -> Sequence[SigningKey]:
        """Every key, retired ones too, oldest first."""
        return sorted(self._keys.values(), key=lambda key: (key.created_at, key.kid))

    async def add(self, key: SigningKey) -> None:
        """Store a new key.

        Raises:
            InvalidInputError: a key with this kid already exists.
        """
        stored = replace(
            key,
            created_at=_as_utc(key.created_at, "created_at"),
            retired_at=_optional_utc(key.retired_at, "retired_at"),
        )
        if key.kid in self._keys:
            raise InvalidInputError(f"A signing key with kid {key.kid!r} already exists.")
        self._keys[key.kid] = stored

    async def retire(self, kid: str, at: datetime) -> bool:
        """Mark the key retired at `at`; an earlier retirement time is kept. False if no such key."""
        retired_at = _as_utc(at, "at")
        key = self._keys.get(kid)
        if key is None:
            return False
        if key.retired_at is None:
            self._keys[kid] = replace(key, retired_at=retired_at)
        return True


class MemoryTenantStore:
    """Tenants by id; the id and each route (API subdomain, CLI prefix, MCP port) belong to one tenant."""

    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._deleted: set[str] = set()  # ids of deleted tenants, never given out again

    async def add(self, tenant: Tenant) -> None:
        """Store a new tenant.

        Raises:
            TenantConflictError: the id, the API subdomain, the CLI prefix or the MCP port is taken.
        """
        stored = replace(
            tenant,
            status=TenantStatus(tenant.status),
            created_at=_as_utc(tenant.created_at, "created_at"),
            suspended_at=_optional_utc(tenant.suspended_at, "suspended_at"),
        )
        if tenant.tenant_id in self._tenants:
            raise TenantConflictError(f"A tenant with id {tenant.tenant_id!r} already exists.")
        if tenant.tenant_id in self._deleted:
            raise TenantConflictError(
                f"Tenant id {tenant.tenant_id!r} belonged to a deleted tenant; ids are never reused."
            )
        taken = {route for other in self._tenants.values() for route in _tenant_routes(other)}
        for name, value in _tenant_routes(tenant):
            if value is not None and (name, value) in taken:
                raise TenantConflictError(f"The {name} {value!r} is already another tenant's.")
        self._tenants[tenant.tenant_id] = stored

    async def get(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    async def list(self) -> Sequence[Tenant]:
        """Every tenant, by id."""
        return [self._tenants[tenant_id] for tenant_id in sorted(self._tenants)]

    async def set_suspended(self, tenant_id: str, at: datetime | None) -> bool:
        """Suspend (at `at`) or reactivate (None); False when there is no such tenant."""
        suspended_at = _optional_utc(at, "at")
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return False
        status = TenantStatus.ACTIVE if suspended_at is None else TenantStatus.SUSPENDED
        self._tenants[tenant_id] = replace(tenant, status=status, suspended_at=suspended_at)
        return True

    async def delete(self, tenant_id: str, at: datetime) -> bool:
        """Gone from every listing and route (its routes free for others), its id never reused."""
        _as_utc(at, "at")
        if self._tenants.pop(tenant_id, None) is None:
            return False
        self._deleted.add(tenant_id)
        return True

    async def set_workflow_shared(self, tenant_id: str, workflow: str, shared: bool) -> Tenant | None:
        """Add `workflow` to the tenant's shared workflows (or take it out); None when no such tenant."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return None
        names = tenant.shared_workflows | {workflow} if shared else tenant.shared_workflows - {workflow}
        changed = replace(tenant, shared_workflows=frozenset(names))
        self._tenants[tenant_id] = changed
        return changed


def _tenant_routes(tenant: Tenant) -> tuple[tuple[str, str | int | None], ...]:
    config = tenant.config
    return (
        ("api_subdomain", config.api_subdomain),
        ("cli_prefix", config.cli_prefix),
        ("mcp_port", config.mcp_port),
    )
