"""`nexus keys create --tenants` and `nexus users create/update --tenants`: membership from the
command line, shown by the list commands, against a real SQLite state store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nexus.console import app

runner = CliRunner()
PASSWORD = "correct horse battery staple"


def test_keys_create_with_tenants_lists_them_in_json_and_in_the_table(tmp_path: Path) -> None:
    state = ["--state-url", f"sqlite:///{tmp_path / 'state.db'}"]

    created = runner.invoke(app, ["keys", "create", "acme-ci", "--tenants", "acme, globex", *state])
    platform = runner.invoke(app, ["keys", "create", "ops", *state])
    listing = runner.invoke(app, ["keys", "list", "--json", *state])
    table = runner.invoke(app, ["keys", "list", *state], terminal_width=200)

    assert created.exit_code == 0, created.stderr
    assert "tenants: acme, globex" in created.stderr
    assert platform.exit_code == 0, platform.stderr
    tenants_by_name = {key["name"]: key["tenants"] for key in json.loads(listing.stdout)["keys"]}
    assert tenants_by_name == {"acme-ci": ["acme", "globex"], "ops": []}
    assert "tenants" in table.stdout
    assert "acme, globex" in table.stdout


@pytest.mark.parametrize("tenants", ["Acme", "acme,no spaces", "public"])
def test_keys_create_with_an_invalid_tenant_id_exits_2_and_creates_nothing(
    tmp_path: Path, tenants: str
) -> None:
    state = ["--state-url", f"sqlite:///{tmp_path / 'state.db'}"]

    created = runner.invoke(app, ["keys", "create", "ci", "--tenants", tenants, *state])
    listing = runner.invoke(app, ["keys", "list", "--json", *state])

    assert created.exit_code == 2
    assert "Invalid tenant id" in created.stderr
    assert "Traceback" not in created.stderr
    assert json.loads(listing.stdout)["keys"] == []


@pytest.fixture
def user_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A module app with local users on a SQLite file; its MODULE:APP reference."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = f"cli_members_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(
        "from nexus import Nexus\n"
        f"app = Nexus(state_url='sqlite:///{tmp_path / 'users.db'}', enable_auth=True)\n"
        "app.auth.password_time_cost = 1\n"
        "app.auth.password_memory_kib = 1024\n"
    )
    return f"{module}:app"


def test_users_create_and_update_set_the_tenants_and_list_shows_them(user_app: str) -> None:
    created = runner.invoke(
        app,
        ["users", "create", user_app, "carol", "--tenants", "acme", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    updated = runner.invoke(app, ["users", "update", user_app, "carol", "--tenants", "globex,initech"])
    listing = runner.invoke(app, ["users", "list", user_app, "--json"])
    table = runner.invoke(app, ["users", "list", user_app], terminal_width=200)
    emptied = runner.invoke(app, ["users", "update", user_app, "carol", "--tenants", ""])
    after = runner.invoke(app, ["users", "list", user_app, "--json"])

    assert created.exit_code == 0, created.stderr
    assert "tenants: acme" in created.stdout
    assert updated.exit_code == 0, updated.stderr
    assert "tenants: globex, initech" in updated.stdout
    assert "sessions have ended" in updated.stdout
    [row] = json.loads(listing.stdout)["users"]
    assert row["tenants"] == ["globex", "initech"]
    assert "globex, initech" in table.stdout
    assert emptied.exit_code == 0, emptied.stderr
    assert json.loads(after.stdout)["users"][0]["tenants"] == []


def test_users_update_without_a_change_or_with_an_invalid_tenant_exits_2(user_app: str) -> None:
    runner.invoke(app, ["users", "create", user_app, "dan", "--password-stdin"], input=PASSWORD + "\n")

    nothing = runner.invoke(app, ["users", "update", user_app, "dan"])
    invalid = runner.invoke(app, ["users", "update", user_app, "dan", "--tenants", "pg_catalog"])
    unknown = runner.invoke(app, ["users", "update", user_app, "nobody", "--tenants", "acme"])
    listing = runner.invoke(app, ["users", "list", user_app, "--json"])

    assert (nothing.exit_code, invalid.exit_code, unknown.exit_code) == (2, 2, 2)
    assert "--tenants" in nothing.stderr
    assert "Invalid tenant id" in invalid.stderr
    assert "No user named 'nobody'" in unknown.stderr
    assert json.loads(listing.stdout)["users"][0]["tenants"] == []
