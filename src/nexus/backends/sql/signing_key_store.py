"""`SigningKeyStore` on the SQL state database (table `signing_keys`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from nexus.backends.sql.engine import changed_rows, reading, transaction
from nexus.backends.sql.schema import keep_first, require_aware, signing_keys
from nexus.core.auth.model import SigningKey
from nexus.errors import InvalidInputError


class SqlSigningKeyStore:
    """Token signing keys by kid, shared by every node so each can verify the others' tokens."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def list(self) -> Sequence[SigningKey]:
        """Every key, retired ones too, oldest first."""
        query = select(signing_keys).order_by(signing_keys.c.created_at, signing_keys.c.kid)
        async with reading(self._engine) as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_to_key(row) for row in rows]

    async def add(self, key: SigningKey) -> None:
        """Store a new key.

        Raises:
            InvalidInputError: a key with this kid already exists.
        """
        row = {
            "kid": key.kid,
            "algorithm": key.algorithm,
            "private_pem": key.private_pem,
            "created_at": require_aware(key.created_at, "created_at"),
            "retired_at": None if key.retired_at is None else require_aware(key.retired_at, "retired_at"),
        }
        async with transaction(self._engine) as connection:
            try:
                await connection.execute(signing_keys.insert(), row)
            except IntegrityError as exc:
                raise InvalidInputError(f"A signing key with kid {key.kid!r} already exists.") from exc

    async def retire(self, kid: str, at: datetime) -> bool:
        """Mark the key retired at `at`; an earlier retirement time is kept. False if no such key."""
        retired = keep_first(signing_keys.c.retired_at, at)
        statement = update(signing_keys).where(signing_keys.c.kid == kid).values(retired_at=retired)
        return await changed_rows(self._engine, statement) == 1


def _to_key(row: Any) -> SigningKey:
    return SigningKey(
        kid=row["kid"],
        algorithm=row["algorithm"],
        private_pem=row["private_pem"],
        created_at=row["created_at"],
        retired_at=row["retired_at"],
    )
