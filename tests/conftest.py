"""Fixtures shared by the suites: real backends, each port against every backend.

Real servers only. A missing PostgreSQL or Redis skips its tests, except under CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from nexus.backends.memory import MemoryAuditSink, MemoryKeyStore
from nexus.backends.sql import SqlState, open_state
from nexus.core.ports import AuditSink, KeyStore

# The real identity servers (OIDC provider, SAML IdP, slapd), each started once per session on first use.
pytest_plugins = ("tests.support.oidc", "tests.support.saml", "tests.support.ldap")

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432


@pytest.fixture(autouse=True)
def _private_cli_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `nexus` CLI keeps logins in its config directory: never the real one in tests."""
    monkeypatch.setenv("NEXUS_CONFIG_DIR", str(tmp_path_factory.mktemp("nexus-config")))


REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SQL_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def require_service(name: str, host: str, port: int) -> None:
    """Skip the test when nothing listens at host:port; under CI=true fail it instead."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} must listen on {host}:{port} when CI=true", pytrace=False)
        pytest.skip(f"no {name} on {host}:{port}")


def _run_in_own_loop(coroutine: Coroutine[Any, Any, None]) -> None:
    # Session set-up runs outside the tests' event loops; a thread keeps asyncio.run away from them.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result(timeout=60)


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", database="test"
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own for this test session (created here, dropped at the end); its URL."""
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    name = f"nexus_test_{secrets.token_hex(6)}"
    _run_in_own_loop(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        _run_in_own_loop(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis (database 0); callers isolate their keys with a unique prefix."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


async def empty_postgres(url: str) -> None:
    """Drop every table of the session's database, leaving it as freshly created."""
    # The session owns this database, so wiping its schema cannot disturb anyone else.
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()


async def fresh_state_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, unmigrated state database of `backend` ("sqlite" or "postgres")."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'nexus.db'}"
    url: str = request.getfixturevalue("postgres_database")
    await empty_postgres(url)
    return url


@pytest.fixture(params=SQL_BACKENDS)
async def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty SQL state database, once per SQL backend."""
    return await fresh_state_url(request.param, request, tmp_path)


@pytest.fixture
async def postgres_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty PostgreSQL state database, for tests about PostgreSQL alone."""
    return await fresh_state_url("postgres", request, tmp_path)


@pytest.fixture
async def sql_state(state_url: str) -> AsyncIterator[SqlState]:
    """An opened, migrated SQL state store, once per SQL backend."""
    state = await open_state(state_url)
    try:
        yield state
    finally:
        await state.close()


@pytest.fixture(params=BACKENDS)
async def backend_state(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[KeyStore, AuditSink]]:
    """The key store and audit sink of one backend, once per backend (memory, sqlite, postgres)."""
    if request.param == "memory":
        sink = MemoryAuditSink()
        yield MemoryKeyStore(), sink
        await sink.close()
        return
    state = await open_state(await fresh_state_url(request.param, request, tmp_path))
    try:
        yield state.keys, state.audit
    finally:
        await state.close()


@pytest.fixture
def key_store(backend_state: tuple[KeyStore, AuditSink]) -> KeyStore:
    return backend_state[0]


@pytest.fixture
def audit_sink(backend_state: tuple[KeyStore, AuditSink]) -> AuditSink:
    return backend_state[1]
