"""`FactorStore` on the SQL state database (table `mfa_factors`).

Every check-and-set is one UPDATE whose WHERE holds the check, so of two concurrent callers only
one can change the row: a TOTP code or a recovery code is accepted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from nexus.backends.sql.engine import SQLITE_WRITE_LOCK, changed_rows, reading, transaction
from nexus.backends.sql.schema import mfa_factors, require_aware
from nexus.core.auth.model import Factor, FactorKind
from nexus.errors import InvalidInputError

_DUPLICATE_KEY = "This security key is already registered."


class SqlFactorStore:
    """Second factors by id; credential ids of hardware keys are unique."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # `add` reads before it writes: on SQLite it must hold the write lock from BEGIN, or a
        # concurrent writer would leave its read snapshot stale and the insert would fail as "locked".
        self._writer = engine.execution_options(**SQLITE_WRITE_LOCK)

    async def add(self, factor: Factor) -> None:
        """Store a new factor.

        Raises:
            InvalidInputError: the factor id, or the hardware key's credential id, is already stored.
        """
        row = _to_row(factor)
        async with transaction(self._writer) as connection:
            await _refuse_taken(connection, factor)
            try:
                await connection.execute(mfa_factors.insert(), row)
            except IntegrityError as exc:
                raise InvalidInputError(_DUPLICATE_KEY) from exc

    async def for_user(self, user_id: str) -> Sequence[Factor]:
        """The user's factors, oldest first."""
        query = (
            select(mfa_factors)
            .where(mfa_factors.c.user_id == user_id)
            .order_by(mfa_factors.c.created_at, mfa_factors.c.factor_id)
        )
        async with reading(self._engine) as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_to_factor(row) for row in rows]

    async def activate(self, factor_id: str) -> bool:
        """Mark the factor active; False if there is no such factor."""
        return await self._change(factor_id, None, active=True)

    async def advance_step(self, factor_id: str, step: int) -> bool:
        """Record TOTP step `step`; False when it, or a later one, already was (or no such factor)."""
        return await self._change(factor_id, mfa_factors.c.last_step < step, last_step=step)

    async def advance_sign_count(self, factor_id: str, sign_count: int) -> bool:
        """Store a grown WebAuthn counter; a counter staying at 0 (keys without one) also passes."""
        column = mfa_factors.c.sign_count
        grown = column < sign_count if sign_count > 0 else column == 0
        return await self._change(factor_id, grown, sign_count=sign_count)

    async def use_once(self, factor_id: str, at: datetime) -> bool:
        """Mark a recovery code used at `at`; False when it already was (or no such factor)."""
        used_at = require_aware(at, "at")
        return await self._change(factor_id, mfa_factors.c.used_at.is_(None), used_at=used_at)

    async def remove(self, factor_id: str) -> bool:
        statement = delete(mfa_factors).where(mfa_factors.c.factor_id == factor_id)
        return await changed_rows(self._engine, statement) == 1

    async def _change(self, factor_id: str, condition: Any, **values: Any) -> bool:
        where = mfa_factors.c.factor_id == factor_id
        if condition is not None:
            where = and_(where, condition)
        return await changed_rows(self._engine, update(mfa_factors).where(where).values(**values)) == 1


async def _refuse_taken(connection: AsyncConnection, factor: Factor) -> None:
    taken = mfa_factors.c.factor_id == factor.factor_id
    if factor.credential_id is not None:
        taken = or_(taken, mfa_factors.c.credential_id == factor.credential_id)
    row = (await connection.execute(select(mfa_factors.c.factor_id).where(taken))).first()
    if row is None:
        return
    if row.factor_id == factor.factor_id:
        raise InvalidInputError(f"A second factor with id {factor.factor_id!r} already exists.")
    raise InvalidInputError(_DUPLICATE_KEY)


def _to_row(factor: Factor) -> dict[str, Any]:
    return {
        "factor_id": factor.factor_id,
        "user_id": factor.user_id,
        "kind": FactorKind(factor.kind).value,
        "secret": factor.secret,
        "label": factor.label,
        "credential_id": factor.credential_id,
        "sign_count": factor.sign_count,
        "last_step": factor.last_step,
        "active": factor.active,
        "created_at": require_aware(factor.created_at, "created_at"),
        "used_at": None if factor.used_at is None else require_aware(factor.used_at, "used_at"),
    }


def _to_factor(row: Any) -> Factor:
    return Factor(
        factor_id=row["factor_id"],
        user_id=row["user_id"],
        kind=FactorKind(row["kind"]),
        secret=row["secret"],
        created_at=row["created_at"],
        active=bool(row["active"]),
        label=row["label"],
        credential_id=row["credential_id"],
        sign_count=int(row["sign_count"]),
        last_step=int(row["last_step"]),
        used_at=row["used_at"],
    )
