"""`KeyStore` on the SQL state database (table `api_keys`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from nexus.backends.sql.engine import changed_rows, reading, transaction
from nexus.backends.sql.schema import api_keys, keep_first, require_aware
from nexus.core.types import ApiKey
from nexus.errors import InvalidInputError


class SqlKeyStore:
    """API keys by id; only hashes of secrets are stored."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, key: ApiKey) -> None:
        """Store a new key.

        Raises:
            InvalidInputError: a key with this id already exists.
        """
        row = {
            "key_id": key.key_id,
            "name": key.name,
            "secret_hash": key.secret_hash,
            "roles": json.dumps(sorted(key.roles)),
            "created_at": require_aware(key.created_at, "created_at"),
            "revoked_at": None if key.revoked_at is None else require_aware(key.revoked_at, "revoked_at"),
            "tenants": json.dumps(sorted(key.tenants)),
        }
        async with transaction(self._engine) as connection:
            try:
                await connection.execute(api_keys.insert(), row)
            except IntegrityError as exc:
                raise InvalidInputError(f"An API key with id {key.key_id!r} already exists.") from exc

    async def get(self, key_id: str) -> ApiKey | None:
        async with reading(self._engine) as connection:
            result = await connection.execute(select(api_keys).where(api_keys.c.key_id == key_id))
            row = result.mappings().first()
        return None if row is None else _to_key(row)

    async def list(self) -> Sequence[ApiKey]:
        """Every key, oldest first."""
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        async with reading(self._engine) as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_to_key(row) for row in rows]

    async def revoke(self, key_id: str, at: datetime) -> bool:
        """Mark the key revoked at `at`; an earlier revocation time is kept. False if no such key."""
        revoked = keep_first(api_keys.c.revoked_at, at)
        statement = update(api_keys).where(api_keys.c.key_id == key_id).values(revoked_at=revoked)
        return await changed_rows(self._engine, statement) == 1


def _to_key(row: Any) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        name=row["name"],
        secret_hash=row["secret_hash"],
        roles=frozenset(json.loads(row["roles"])),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        tenants=frozenset(json.loads(row["tenants"])),
    )
