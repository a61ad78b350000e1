"""Opened SQL state stores with empty identity tables, made without a migration per test.

SQLite: a file copied from a template migrated once per session. PostgreSQL: the session's database,
migrated when some other test left it empty, with the identity tables truncated.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from nexus.backends.sql import SqlState, open_state

_IDENTITY_TABLES = "users, mfa_factors, sessions, signing_keys"


async def open_identity_state(backend: str, request: pytest.FixtureRequest) -> SqlState:
    """An opened state store of `backend` ("sqlite" or "postgres"); the caller closes it."""
    if backend == "sqlite":
        return await open_state(await _copy_of_template(request))
    state = await open_state(request.getfixturevalue("postgres_database"))
    try:
        async with state.engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {_IDENTITY_TABLES}"))
    except BaseException:
        await state.close()
        raise
    return state


async def _copy_of_template(request: pytest.FixtureRequest) -> str:
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    template = factory.getbasetemp() / "identity-template.db"
    if not template.exists():
        await (await open_state(f"sqlite:///{template}")).close()
    target: Path = request.getfixturevalue("tmp_path") / "nexus.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"
