"""`UserStore` on the SQL state database (table `users`), and the JSON column helpers it shares."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from nexus.backends.sql.engine import SQLITE_WRITE_LOCK, changed_rows, reading, transaction
from nexus.backends.sql.schema import require_aware, users
from nexus.core.auth.model import User, username_key
from nexus.errors import ConfigurationError


def dump_object(value: Mapping[str, Any], what: str) -> str:
    """A JSON object as column text; anything JSON cannot hold is refused."""
    try:
        return json.dumps(dict(value), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must hold JSON values only") from exc


def load_object(text: str) -> Mapping[str, Any]:
    """A read-only mapping from a JSON object column."""
    return MappingProxyType(json.loads(text))


class SqlUserStore:
    """Users by id; usernames are unique whatever their letter case (column `username_key`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # `add` reads before it writes: on SQLite it must hold the write lock from BEGIN, or a
        # concurrent writer would leave its read snapshot stale and the insert would fail as "locked".
        self._writer = engine.execution_options(**SQLITE_WRITE_LOCK)

    async def add(self, user: User) -> None:
        """Store a new user.

        Raises:
            ConfigurationError: the username (in any letter case) or the user id is taken.
        """
        row = _to_row(user)
        async with transaction(self._writer) as connection:
            await _refuse_taken(connection, user)
            try:
                await connection.execute(users.insert(), row)
            except IntegrityError as exc:
                # Only a concurrent add of the same name or id gets here; the checks above name it otherwise.
                raise ConfigurationError(
                    f"The username {user.username!r} or the user id {user.user_id!r} is already taken."
                ) from exc

    async def get(self, user_id: str) -> User | None:
        return await self._one(users.c.user_id == user_id)

    async def find(self, username: str) -> User | None:
        """The user whose username matches in any letter case."""
        return await self._one(users.c.username_key == username_key(username))

    async def list(self) -> Sequence[User]:
        """Every user, by username."""
        query = select(users).order_by(users.c.username_key, users.c.user_id)
        async with reading(self._engine) as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_to_user(row) for row in rows]

    async def update(self, user: User) -> None:
        """Replace the stored user with the same id.

        Raises:
            ConfigurationError: no such user, or the new username belongs to another user.
        """
        row = _to_row(user)
        del row["user_id"]
        statement = update(users).where(users.c.user_id == user.user_id).values(**row)
        async with transaction(self._engine) as connection:
            try:
                result = await connection.execute(statement)
            except IntegrityError as exc:
                raise ConfigurationError(f"The username {user.username!r} is already taken.") from exc
            if result.rowcount != 1:
                raise ConfigurationError(f"There is no user with id {user.user_id!r}.")

    async def delete(self, user_id: str) -> bool:
        return await changed_rows(self._engine, delete(users).where(users.c.user_id == user_id)) == 1

    async def _one(self, condition: Any) -> User | None:
        async with reading(self._engine) as connection:
            row = (await connection.execute(select(users).where(condition))).mappings().first()
        return None if row is None else _to_user(row)


async def _refuse_taken(connection: AsyncConnection, user: User) -> None:
    name_query = select(users.c.user_id).where(users.c.username_key == username_key(user.username))
    if (await connection.execute(name_query)).first() is not None:
        raise ConfigurationError(f"The username {user.username!r} is already taken.")
    id_query = select(users.c.user_id).where(users.c.user_id == user.user_id)
    if (await connection.execute(id_query)).first() is not None:
        raise ConfigurationError(f"A user with id {user.user_id!r} already exists.")


def _to_row(user: User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "username": user.username,
        "username_key": username_key(user.username),
        "source": user.source,
        "roles": json.dumps(sorted(user.roles)),
        "attributes": dump_object(user.attributes, "User.attributes"),
        "password_hash": user.password_hash,
        "phone": user.phone,
        "disabled": user.disabled,
        "created_at": require_aware(user.created_at, "created_at"),
        "tenants": json.dumps(sorted(user.tenants)),
    }


def _to_user(row: Any) -> User:
    return User(
        user_id=row["user_id"],
        username=row["username"],
        source=row["source"],
        roles=frozenset(json.loads(row["roles"])),
        created_at=row["created_at"],
        attributes=load_object(row["attributes"]),
        password_hash=row["password_hash"],
        phone=row["phone"],
        disabled=bool(row["disabled"]),
        tenants=frozenset(json.loads(row["tenants"])),
    )
