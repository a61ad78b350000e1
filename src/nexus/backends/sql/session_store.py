"""`SessionStore` on the SQL state database (table `sessions`).

An expired session reads as unknown and is deleted by a later `create`; a revoked one stays
readable, as revoked, until it expires. Each change is one conditional UPDATE.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from nexus.backends.sql.engine import changed_rows, reading, transaction
from nexus.backends.sql.schema import keep_first, require_aware, sessions
from nexus.backends.sql.user_store import dump_object, load_object
from nexus.core.auth.model import Session
from nexus.core.types import Channel
from nexus.errors import InvalidInputError


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SqlSessionStore:
    """Server-side sessions by id, shared by every node on the same database."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._engine = engine
        self._now = clock

    async def create(self, session: Session) -> None:
        """Store a new session, and delete the ones that have expired.

        Raises:
            InvalidInputError: a session with this id already exists.
        """
        row = _to_row(session)
        expired = delete(sessions).where(sessions.c.expires_at <= self._now())
        async with transaction(self._engine) as connection:
            await connection.execute(expired)
            try:
                await connection.execute(sessions.insert(), row)
            except IntegrityError as exc:
                raise InvalidInputError("A session with this id already exists.") from exc

    async def get(self, session_id: str) -> Session | None:
        """The session until it expires, revoked or not; None when unknown or expired."""
        query = select(sessions).where(sessions.c.session_id == session_id, self._unexpired())
        async with reading(self._engine) as connection:
            row = (await connection.execute(query)).mappings().first()
        return None if row is None else _to_session(row)

    async def reauthenticated(
        self,
        session_id: str,
        *,
        auth_time: datetime,
        mfa_time: datetime | None,
        mfa_channels: frozenset[Channel],
    ) -> bool:
        """Replace the proof times and MFA channels of a live session; False if it is not live."""
        values = {
            "auth_time": require_aware(auth_time, "auth_time"),
            "mfa_time": None if mfa_time is None else require_aware(mfa_time, "mfa_time"),
            "mfa_channels": _dump_channels(mfa_channels),
        }
        where = and_(sessions.c.session_id == session_id, sessions.c.revoked_at.is_(None), self._unexpired())
        return await self._update(where, values) == 1

    async def revoke(self, session_id: str, at: datetime) -> bool:
        """Mark the session revoked; the first revocation time is kept. False if unknown or expired."""
        where = and_(sessions.c.session_id == session_id, self._unexpired())
        return await self._update(where, {"revoked_at": keep_first(sessions.c.revoked_at, at)}) == 1

    async def revoke_user(self, user_id: str, at: datetime) -> int:
        """Revoke every live session of a user; how many there were."""
        revoked_at = require_aware(at, "at")
        where = and_(sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None), self._unexpired())
        return await self._update(where, {"revoked_at": revoked_at})

    async def close(self) -> None:
        """Nothing to release: the engine belongs to the state store."""

    def _unexpired(self) -> Any:
        return sessions.c.expires_at > self._now()

    async def _update(self, where: Any, values: dict[str, Any]) -> int:
        return await changed_rows(self._engine, update(sessions).where(where).values(**values))


def _dump_channels(channels: frozenset[Channel]) -> str:
    return json.dumps(sorted(Channel(channel).value for channel in channels))


def _to_row(session: Session) -> dict[str, Any]:
    def optional(value: datetime | None, what: str) -> datetime | None:
        return None if value is None else require_aware(value, what)

    return {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "username": session.username,
        "method": session.method,
        "roles": json.dumps(sorted(session.roles)),
        "attributes": dump_object(session.attributes, "Session.attributes"),
        "created_at": require_aware(session.created_at, "created_at"),
        "expires_at": require_aware(session.expires_at, "expires_at"),
        "auth_time": require_aware(session.auth_time, "auth_time"),
        "origin_channel": Channel(session.origin_channel).value,
        "secret_hash": session.secret_hash,
        "mfa_time": optional(session.mfa_time, "mfa_time"),
        "mfa_channels": _dump_channels(session.mfa_channels),
        "revoked_at": optional(session.revoked_at, "revoked_at"),
        "tenant_id": session.tenant_id,
        "tenants": json.dumps(sorted(session.tenants)),
    }


def _to_session(row: Any) -> Session:
    return Session(
        session_id=row["session_id"],
        user_id=row["user_id"],
        username=row["username"],
        method=row["method"],
        roles=frozenset(json.loads(row["roles"])),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        auth_time=row["auth_time"],
        origin_channel=Channel(row["origin_channel"]),
        secret_hash=row["secret_hash"],
        attributes=load_object(row["attributes"]),
        mfa_time=row["mfa_time"],
        mfa_channels=frozenset(Channel(channel) for channel in json.loads(row["mfa_channels"])),
        revoked_at=row["revoked_at"],
        tenant_id=row["tenant_id"],
        tenants=frozenset(json.loads(row["tenants"])),
    )
