"""`nexus health` and `nexus authz explain`, driven by CliRunner against an app served from a thread."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.unit.channels.test_authz_surfaces import build_app
from tests.unit.channels.test_cli_startup import HEAVY, PROBE
from typer.testing import CliRunner, Result

from nexus.channels.cli.authz import parse_attributes
from nexus.channels.cli.problem import Failure
from nexus.console import app as cli

runner = CliRunner()
ROLES = {
    "operator": ["cli:read:health", "cli:explain:authz"],
    "analyst": ["api:read:add"],
    "tenant_admin": ["cli:create:tenants"],
}


@dataclass
class Server:
    url: str
    tokens: dict[str, str]
    key_ids: dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    app = build_app(tmp_path_factory.mktemp("authz-cli"), ROLES)
    app.auth.password_time_cost = 1
    app.auth.password_memory_kib = 1024

    async def prepare() -> dict[str, Any]:
        await app.create_user(
            "ann", "correct horse battery", roles=["analyst"], attributes={"clearance_level": 1}
        )
        return {role: await app.create_api_key(role, roles=[role]) for role in ROLES}

    issued = asyncio.run(prepare())
    running = app.start_in_thread()
    try:
        yield Server(
            running.api_url,
            {role: key.plaintext for role, key in issued.items()},
            {role: key.key.key_id for role, key in issued.items()},
        )
    finally:
        running.stop()


def nexus(server: Server, *args: str, role: str = "operator") -> Result:
    return runner.invoke(cli, list(args), env={"NEXUS_URL": server.url, "NEXUS_TOKEN": server.tokens[role]})


# -- nexus health -----------------------------------------------------------------------------------


def test_health_prints_status_version_workflows_and_readiness(server: Server) -> None:
    result = nexus(server, "health")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == ["Status: ok", "Version: 0.1.0", "Workflows: 2", "Ready: yes"]
    assert lines[4] == f"Server: {server.url}"


def test_health_json_prints_the_document(server: Server) -> None:
    result = nexus(server, "health", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "ok", "version": "0.1.0", "workflows": 2, "ready": True}


def test_health_without_read_health_on_the_cli_exits_77_with_the_problem(server: Server) -> None:
    result = nexus(server, "health", "--json", role="analyst")
    assert result.exit_code == 77
    assert json.loads(result.stderr)["code"] == "forbidden"
    assert result.stdout == ""


# -- nexus authz explain -----------------------------------------------------------------------------


def test_explain_prints_outcome_reason_roles_permission_and_each_policy(server: Server) -> None:
    result = nexus(
        server,
        *("authz", "explain", "--role", "analyst", "--attr", "clearance_level=3"),
        *("--workflow", "add", "--channel", "api", "--action", "read"),
    )
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Outcome: ALLOW\n" in out
    assert "Reason: allowed: role 'analyst' grants 'api:read:add'; policy 'cleared' (permit) satisfied" in out
    assert "Roles: analyst\n" in out
    assert "Permission: role 'analyst' grants 'api:read:add'\n" in out
    assert "  cleared (permit): satisfied; policy 'cleared' (permit) held\n" in out


def test_explain_for_a_user_reads_the_users_roles_and_attributes(server: Server) -> None:
    result = nexus(
        server,
        "authz",
        "explain",
        "--user",
        "ann",
        "--workflow",
        "add",
        "--channel",
        "api",
        "--action",
        "read",
    )
    assert result.exit_code == 0, result.stderr
    assert "Outcome: INVISIBLE\n" in result.stdout
    assert "Roles: analyst\n" in result.stdout
    assert "  cleared (permit): not satisfied; policy 'cleared' (permit) did not hold\n" in result.stdout


def test_explain_json_with_a_draft_file_decides_by_the_draft(server: Server, tmp_path: Path) -> None:
    draft = tmp_path / "draft.json"
    draft.write_text(json.dumps({"rbac": {"roles": {"analyst": {"permissions": ["api:execute:add"]}}}}))
    args = ("--api-key", server.key_ids["analyst"], "--workflow", "add", "--channel", "api")
    drafted = nexus(server, "authz", "explain", *args, "--action", "execute", "--draft", str(draft), "--json")
    installed = nexus(server, "authz", "explain", *args, "--action", "execute", "--json")
    assert drafted.exit_code == 0, drafted.stderr
    document = json.loads(drafted.stdout)
    assert (document["draft"], document["permission"]) == (True, "role 'analyst' grants 'api:execute:add'")
    assert document["principal"]["id"] == f"key:{server.key_ids['analyst']}"
    assert json.loads(installed.stdout)["permission"] is None


def test_explain_of_a_surface_names_it_as_the_target(server: Server) -> None:
    result = nexus(
        server,
        "authz",
        "explain",
        "--role",
        "operator",
        "--surface",
        "health",
        "--channel",
        "cli",
        "--action",
        "read",
    )
    assert result.exit_code == 0, result.stderr
    assert "Outcome: ALLOW\n" in result.stdout
    assert "Target: the health surface\n" in result.stdout
    assert "Policies: none apply\n" in result.stdout


def test_explain_of_the_tenants_surface_names_its_permission(server: Server) -> None:
    query = ("authz", "explain", "--surface", "tenants", "--channel", "cli", "--action", "create")
    admin = nexus(server, *query, "--role", "tenant_admin")
    operator = nexus(server, *query, "--role", "operator")
    assert admin.exit_code == 0, admin.stderr
    assert "Outcome: ALLOW\n" in admin.stdout
    assert "Target: the tenants surface\n" in admin.stdout
    assert "Permission: role 'tenant_admin' grants 'cli:create:tenants'\n" in admin.stdout
    assert operator.exit_code == 0, operator.stderr
    assert "Outcome: INVISIBLE\n" in operator.stdout


def test_explain_without_explain_permission_exits_77(server: Server) -> None:
    query = ("--role", "analyst", "--workflow", "add", "--channel", "api", "--action", "read")
    result = nexus(server, "authz", "explain", *query, role="analyst")
    assert result.exit_code == 77
    assert "Forbidden" in result.stderr


def test_a_query_the_server_refuses_exits_2_with_its_reason(server: Server) -> None:
    query = ("--user", "ann", "--api-key", "x", "--workflow", "add", "--channel", "api", "--action", "read")
    result = nexus(server, "authz", "explain", *query)
    assert result.exit_code == 2
    assert "Name a user or an API key, not both." in result.stderr


def test_an_unreadable_draft_file_exits_2_before_any_call(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    args = ["--url", "http://127.0.0.1:9", "authz", "explain", "--role", "r", "--workflow", "add"]
    result = runner.invoke(cli, [*args, "--channel", "api", "--action", "read", "--draft", str(missing)])
    assert result.exit_code == 2
    assert "Cannot read the draft" in result.stderr


@pytest.mark.parametrize(("content", "problem"), [("{", "not valid JSON"), ("[1]", "must hold")])
def test_a_malformed_draft_file_exits_2_before_any_call(tmp_path: Path, content: str, problem: str) -> None:
    draft = tmp_path / "draft.json"
    draft.write_text(content)
    args = ["--url", "http://127.0.0.1:9", "authz", "explain", "--role", "r", "--workflow", "add"]
    result = runner.invoke(cli, [*args, "--channel", "api", "--action", "read", "--draft", str(draft)])
    assert result.exit_code == 2
    assert problem in result.stderr


def test_attribute_values_that_read_as_json_stay_typed_and_the_rest_are_strings() -> None:
    assert parse_attributes(["level=3", "ok=true", 'zones=["eu"]', "loc=US", "note=a=b"]) == {
        "level": 3,
        "ok": True,
        "zones": ["eu"],
        "loc": "US",
        "note": "a=b",
    }


@pytest.mark.parametrize("pairs", [["novalue"], ["=3"], ["a=1", "a=2"]])
def test_a_malformed_or_repeated_attribute_is_a_usage_failure(pairs: list[str]) -> None:
    with pytest.raises(Failure) as caught:
        parse_attributes(pairs)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("args", [["health", "--help"], ["authz", "explain", "--help"]])
def test_help_of_the_new_commands_loads_none_of_the_server_stack(args: list[str]) -> None:
    probe = [sys.executable, "-c", PROBE, json.dumps(args)]
    # Our own interpreter and a fixed script.
    done = subprocess.run(probe, capture_output=True, text=True, timeout=60, check=True)  # noqa: S603
    assert "Usage: nexus" in done.stdout
    modules = json.loads(done.stderr.strip().splitlines()[-1])
    assert sorted(m for m in modules if m in HEAVY or m.split(".")[0] in HEAVY) == []
