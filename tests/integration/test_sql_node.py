"""The built-in IO nodes against real servers: SQLite and PostgreSQL, and a local Starlette app for HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from nexus.errors import (
    DeadlineExceededError,
    DependencyUnavailableError,
    InvalidInputError,
    WorkflowDefinitionError,
    WorkflowFailedError,
)
from nexus.nodes import sql as sql_module
from nexus.nodes.http import close_clients
from nexus.nodes.sql import dispose_engines, to_async_url
from nexus.workflow import AsyncLocalRuntime, LocalRuntime, NodeTimeoutError, Workflow, WorkflowBuilder

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
async def release_pools() -> AsyncIterator[None]:
    yield
    await dispose_engines()
    await close_clients()


@pytest.fixture
def postgres_url() -> str:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL must be reachable on 127.0.0.1:5432 in CI: {exc}")
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    return POSTGRES_URL


def sql_workflow(url: str, query: str, fetch: str = "all", node_id: str = "q", **extra: Any) -> Workflow:
    config = {"connection_string": url, "query": query, "fetch": fetch, **extra}
    return WorkflowBuilder().add_node("AsyncSQLDatabaseNode", node_id, config).build()


async def run(workflow: Workflow, parameters: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    results, _ = await AsyncLocalRuntime().execute(workflow, parameters, **kw)
    return results


async def exercise_crud(url: str, table: str) -> None:
    named = {"tbl": table}
    create = sql_workflow(url, "CREATE TABLE ${tbl} (id INTEGER PRIMARY KEY, name TEXT)", fetch="none")
    await run(create, named)
    insert = sql_workflow(url, "INSERT INTO ${tbl} (id, name) VALUES (:id, :name)", fetch="none")
    assert (await run(insert, {**named, "id": 1, "name": "ada"}))["q"] == {"rows": [], "row_count": 1}
    await run(insert, {**named, "q": {"params": {"id": 2, "name": "bob"}}})
    select_all = sql_workflow(url, "SELECT id, name FROM ${tbl} ORDER BY id")
    assert (await run(select_all, named))["q"] == {
        "rows": [{"id": 1, "name": "ada"}, {"id": 2, "name": "bob"}],
        "row_count": 2,
    }
    select_one = sql_workflow(url, "SELECT name FROM ${tbl} WHERE id > :min ORDER BY id", fetch="one")
    assert (await run(select_one, {**named, "min": 0}))["q"] == {
        "rows": [{"name": "ada"}],
        "row_count": 1,
    }
    update = sql_workflow(url, "UPDATE ${tbl} SET name = :name", fetch="none")
    assert (await run(update, {**named, "name": "x'); DROP TABLE t; --"}))["q"]["row_count"] == 2
    hostile = sql_workflow(url, "DROP TABLE ${tbl}", fetch="none")
    for value in (f"{table}; DROP TABLE {table}", "public.x", f"{table} --"):
        with pytest.raises(InvalidInputError, match=r"node 'q': template '\$\{tbl\}' in SQL accepts only"):
            await run(hostile, {"tbl": value})
    rows = (await run(select_all, named))["q"]["rows"]
    assert [row["name"] for row in rows] == ["x'); DROP TABLE t; --"] * 2


async def test_sqlite_node_reads_and_writes_with_binds_and_identifier_templates(tmp_path: Path) -> None:
    await exercise_crud(f"sqlite:///{tmp_path / 'app.db'}", "people")


@pytest.mark.postgres
async def test_postgres_node_reads_and_writes_with_binds_and_identifier_templates(postgres_url: str) -> None:
    table = f"people_{uuid.uuid4().hex[:12]}"
    try:
        await exercise_crud(postgres_url, table)
    finally:
        await run(sql_workflow(postgres_url, "DROP TABLE IF EXISTS ${tbl}", fetch="none"), {"tbl": table})


@pytest.mark.postgres
async def test_postgres_database_name_can_come_from_a_template(postgres_url: str) -> None:
    workflow = sql_workflow(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/${db}", "SELECT current_database() AS db"
    )
    assert (await run(workflow, {"db": "test"}))["q"]["rows"] == [{"db": "test"}]
    with pytest.raises(InvalidInputError, match="accepts only an identifier"):
        await run(workflow, {"db": "test?host=evil"})


@pytest.mark.postgres
async def test_tenant_context_wins_over_a_caller_supplied_template_value(postgres_url: str) -> None:
    workflow = sql_workflow(postgres_url, "SELECT '${schema_name}' AS s")
    results = await run(workflow, {"schema_name": "other_tenant"}, context={"schema_name": "acme"})
    assert results["q"]["rows"] == [{"s": "acme"}]


async def test_missing_bind_value_is_invalid_input_before_any_query(tmp_path: Path) -> None:
    workflow = sql_workflow(f"sqlite:///{tmp_path / 'x.db'}", "SELECT :a AS a, :b AS b")
    with pytest.raises(InvalidInputError, match="node 'q': input 'b': required by the query"):
        await run(workflow, {"a": 1})
    with pytest.raises(InvalidInputError, match="no bind parameter :zzz"):
        await run(workflow, {"a": 1, "b": 2, "q": {"params": {"zzz": 3}}})
    assert not (tmp_path / "x.db").exists()


async def test_sql_error_fails_the_node_without_echoing_bound_values(tmp_path: Path) -> None:
    workflow = sql_workflow(f"sqlite:///{tmp_path / 'x.db'}", "SELECT secret FROM missing_table WHERE v = :v")
    with pytest.raises(
        WorkflowFailedError, match="node 'q' failed: OperationalError: no such table"
    ) as caught:
        await run(workflow, {"v": "hunter2"})
    assert "hunter2" not in caught.value.message


async def test_unreachable_database_is_dependency_unavailable_naming_no_address_or_password() -> None:
    workflow = sql_workflow("postgresql://app:s3cr3t-pw@127.0.0.1:1/test", "SELECT 1")
    refusal = "node 'q': cannot connect to its database"
    with pytest.raises(DependencyUnavailableError, match=refusal) as caught:
        await run(workflow)
    assert "s3cr3t-pw" not in caught.value.message
    assert "127.0.0.1" not in caught.value.message
    assert isinstance(caught.value.__cause__, Exception)


async def test_one_pooled_engine_per_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pool.db'}"
    first, second = sql_workflow(url, "SELECT 1 AS one"), sql_workflow(url, "SELECT 2 AS two", node_id="r")
    other = sql_workflow(f"sqlite:///{tmp_path / 'other.db'}", "SELECT 3 AS three")
    await asyncio.gather(run(first), run(second), run(first), run(other))
    loop = asyncio.get_running_loop()
    urls = sorted(key[1] for key in sql_module._engines if key[0] is loop)
    assert urls == sorted(f"sqlite+aiosqlite:///{tmp_path / name}" for name in ("other.db", "pool.db"))
    await dispose_engines()
    assert not [key for key in sql_module._engines if key[0] is loop]


def test_sync_runtime_releases_pools_of_its_short_lived_loop(tmp_path: Path) -> None:
    workflow = sql_workflow(f"sqlite:///{tmp_path / 's.db'}", "SELECT :n AS n")
    for n in range(2):
        assert LocalRuntime().execute(workflow, {"n": n})[0]["q"]["rows"] == [{"n": n}]
    assert not sql_module._engines


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///a.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite://", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_connection_strings_are_normalized_to_async_drivers(url: str, driver: str) -> None:
    assert to_async_url(url).drivername == driver


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"connection_string": "mysql://h/db", "query": "SELECT 1"}, "unsupported database 'mysql'"),
        (
            {"connection_string": "postgresql://${user}@h/db", "query": "SELECT 1"},
            "templates in connection_string may only name the database",
        ),
        ({"connection_string": "sqlite://", "query": "SELECT 1", "fetch": "many"}, "fetch must be"),
        ({"connection_string": "sqlite://"}, "'query' must be a non-empty string"),
    ],
)
def test_invalid_sql_node_config_fails_the_build(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=f"node 'q' \\(AsyncSQLDatabaseNode\\): {problem}"):
        WorkflowBuilder().add_node("AsyncSQLDatabaseNode", "q", config).build()


# HTTP node ---------------------------------------------------------------------------------------


async def echo(request: Request) -> Response:
    return JSONResponse(
        {
            "raw_path": request.scope["raw_path"].decode(),
            "query": request.scope["query_string"].decode(),
            "token": request.headers.get("x-token"),
            "method": request.method,
            "json": await request.json() if request.method == "POST" else None,
        }
    )


async def text(_: Request) -> Response:
    return PlainTextResponse("plain words")


async def redirect(request: Request) -> Response:
    target = request.path_params["target"]
    port = request.url.port
    location = f"http://localhost:{port}/echo/x" if target == "cross" else "/echo/same"
    return RedirectResponse(location, status_code=302)


async def slow(_: Request) -> Response:
    await asyncio.sleep(3)
    return PlainTextResponse("late")


APP = Starlette(
    routes=[
        Route("/echo/{rest:path}", echo, methods=["GET", "POST"]),
        Route("/text", text),
        Route("/redirect/{target}", redirect),
        Route("/slow", slow),
    ]
)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(APP, log_level="warning", lifespan="off", ws="none", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test HTTP server did not start")
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def http_workflow(**config: Any) -> Workflow:
    return WorkflowBuilder().add_node("HTTPRequestNode", "call", config).build()


async def test_http_node_fills_url_encoded_templates_and_decodes_json(server_url: str) -> None:
    workflow = http_workflow(url=server_url + "/echo/${item}?q=${q}", headers={"X-Token": "t-${user}"})
    results = await run(workflow, {"item": "a/b c", "q": "x&y=z", "user": "ada"})
    call = results["call"]
    assert call["status_code"] == 200
    assert call["headers"]["content-type"] == "application/json"
    assert call["body"]["raw_path"] == "/echo/a%2Fb%20c"
    assert call["body"]["query"] == "q=x%26y%3Dz"
    assert call["body"]["token"] == "t-ada"


async def test_http_node_posts_json_with_templates_and_returns_text_bodies(server_url: str) -> None:
    post = http_workflow(url=server_url + "/echo/p", method="POST", json={"n": "${n}", "label": "n=${n}"})
    assert (await run(post, {"n": 3}))["call"]["body"]["json"] == {"n": 3, "label": "n=3"}
    plain = http_workflow(url=server_url + "/text")
    assert (await run(plain))["call"]["body"] == "plain words"


async def test_http_node_follows_same_host_redirects(server_url: str) -> None:
    results = await run(http_workflow(url=server_url + "/redirect/same"))
    assert results["call"]["body"]["raw_path"] == "/echo/same"


async def test_http_node_refuses_cross_host_redirects_by_default(server_url: str) -> None:
    with pytest.raises(
        WorkflowFailedError, match="node 'call' failed: redirect to another host \\(localhost\\)"
    ):
        await run(http_workflow(url=server_url + "/redirect/cross"))


async def test_http_node_follows_cross_host_redirects_when_allowed(server_url: str) -> None:
    workflow = http_workflow(url=server_url + "/redirect/cross", allow_cross_host_redirects=True)
    assert (await run(workflow))["call"]["body"]["raw_path"] == "/echo/x"


async def test_http_node_returns_the_redirect_when_not_following(server_url: str) -> None:
    workflow = http_workflow(url=server_url + "/redirect/cross", follow_redirects=False)
    call = (await run(workflow))["call"]
    assert call["status_code"] == 302
    assert call["headers"]["location"].startswith("http://localhost:")


async def test_http_node_timeout_is_a_deadline_error_naming_the_node(server_url: str) -> None:
    with pytest.raises(NodeTimeoutError) as caught:
        await run(http_workflow(url=server_url + "/slow", timeout=0.2))
    assert isinstance(caught.value, DeadlineExceededError)
    assert caught.value.node_id == "call"


async def test_http_node_connection_failure_is_dependency_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(DependencyUnavailableError, match=r"node 'call': cannot reach 127\.0\.0\.1"):
        await run(http_workflow(url=f"http://127.0.0.1:{closed_port}/"))


async def test_http_node_shares_one_client_per_event_loop(server_url: str) -> None:
    from nexus.nodes import http as http_module

    workflow = http_workflow(url=server_url + "/text")
    await asyncio.gather(run(workflow), run(workflow))
    loop = asyncio.get_running_loop()
    assert [key for key in http_module._clients if key is loop] == [loop]


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"url": "ftp://h/x"}, "'url' must be an http\\(s\\) URL"),
        ({"url": "http://h", "method": "BREW"}, "unsupported method"),
        ({"url": "http://h", "json": {}, "body": "x"}, "give 'json' or 'body', not both"),
        ({"url": "http://h", "follow_redirects": "yes"}, "'follow_redirects' must be a bool"),
    ],
)
def test_invalid_http_node_config_fails_the_build(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=f"node 'call' \\(HTTPRequestNode\\): {problem}"):
        http_workflow(**config)


async def test_engines_chosen_by_inputs_stay_bounded(tmp_path: Path) -> None:
    from nexus.nodes import sql

    builder = WorkflowBuilder()
    builder.add_node(
        "AsyncSQLDatabaseNode",
        "q",
        {"connection_string": f"sqlite:///{tmp_path}/${{db}}", "query": "SELECT 1 AS one"},
    )
    workflow = builder.build()
    runtime = AsyncLocalRuntime()
    for n in range(sql._MAX_ENGINES + 8):
        results, _ = await runtime.execute(workflow, {"db": f"db{n}"})
        assert results["q"]["rows"] == [{"one": 1}]
    assert len(sql._engines) <= sql._MAX_ENGINES
    await sql.dispose_engines()
