"""`nexus audit verify` and `nexus audit purge` on a module app with a real SQLite state store:
verify exits 0 when the chain is intact and 65 (data error) when it is broken, naming the record."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nexus.backends.sql import open_state
from nexus.console import app
from nexus.core.types import Action, AuditRecord, Channel, Outcome

runner = CliRunner()


def record(request_id: str, age: timedelta) -> AuditRecord:
    return AuditRecord(
        time=datetime.now(UTC) - age,
        request_id=request_id,
        channel=Channel.CLI,
        principal_id="key:alice",
        workflow="report",
        action=Action.EXECUTE,
        outcome=Outcome.FORBIDDEN,
        error_code="forbidden",
        duration_ms=2.0,
    )


async def _seed(url: str) -> None:
    state = await open_state(url)
    try:
        for n, days in enumerate((40, 35, 1)):
            await state.audit.record(record(f"r{n}", timedelta(days=days)))
    finally:
        await state.close()


class AppMaker:
    """Writes module apps on one seeded SQLite file, each with its own `app.auth` lines."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.database = directory / "audit.db"
        self._prefix = prefix
        self._made = 0
        asyncio.run(_seed(f"sqlite:///{self.database}"))

    def __call__(self, *settings: str) -> str:
        """The MODULE:APP reference of a new app with `settings` (e.g. "audit_log_retention = 30")."""
        self._made += 1
        name = f"{self._prefix}_{self._made}"
        lines = [
            "from nexus import Nexus",
            f"app = Nexus(state_url='sqlite:///{self.database}', enable_auth=True)",
            *(f"app.auth.{line}" for line in settings),
        ]
        (self.directory / f"{name}.py").write_text("\n".join(lines) + "\n")
        return f"{name}:app"


@pytest.fixture
def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> AppMaker:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return AppMaker(tmp_path, f"cli_audit_{request.node.name.replace('-', '_')}")


def test_verify_of_an_intact_trail_exits_0_and_says_what_it_checked(make_app: AppMaker) -> None:
    target = make_app()

    text_run = runner.invoke(app, ["audit", "verify", target])
    json_run = runner.invoke(app, ["audit", "verify", target, "--json"])

    assert text_run.exit_code == 0, text_run.stderr
    assert "Audit trail intact: 3 records verified (sequence 1 to 3)" in text_run.stdout
    assert json_run.exit_code == 0, json_run.stderr
    document = json.loads(json_run.stdout)
    assert document["intact"] is True
    assert (document["checked"], document["first_seq"], document["last_seq"]) == (3, 1, 3)
    assert document["broken_seq"] is None


def test_verify_of_a_tampered_trail_exits_65_naming_the_record(make_app: AppMaker) -> None:
    target = make_app()
    with sqlite3.connect(make_app.database) as connection:
        connection.execute("UPDATE audit_records SET outcome = 'success' WHERE seq = 2")

    text_run = runner.invoke(app, ["audit", "verify", target])
    json_run = runner.invoke(app, ["audit", "verify", target, "--json"])

    assert text_run.exit_code == 65
    assert "Audit trail BROKEN at record 2: record 2's fields do not match its hash" in text_run.stdout
    assert "1 records verified before it." in text_run.stdout
    assert json_run.exit_code == 65
    document = json.loads(json_run.stdout)
    assert (document["intact"], document["broken_seq"], document["checked"]) == (False, 2, 1)


def test_purge_deletes_what_outlived_the_retention_and_the_rest_verifies(make_app: AppMaker) -> None:
    target = make_app("audit_log_retention = 30")

    purged = runner.invoke(app, ["audit", "purge", target])
    verified = runner.invoke(app, ["audit", "verify", target])
    again = runner.invoke(app, ["audit", "purge", target])

    assert purged.exit_code == 0, purged.stderr
    assert purged.stdout.strip() == "Purged 2 audit records older than 30 days."
    assert verified.exit_code == 0, verified.stderr
    assert "1 records verified (sequence 3 to 3)" in verified.stdout
    assert "Records before 3 were purged" in verified.stdout
    assert again.stdout.strip() == "Purged 0 audit records older than 30 days."


def test_purge_without_a_retention_keeps_everything_and_says_so(make_app: AppMaker) -> None:
    target = make_app()

    purged = runner.invoke(app, ["audit", "purge", target])
    verified = runner.invoke(app, ["audit", "verify", target, "--json"])

    assert purged.exit_code == 0, purged.stderr
    assert "kept forever" in purged.stdout
    assert json.loads(verified.stdout)["checked"] == 3


def test_purge_on_an_app_whose_retention_a_mode_forbids_exits_2_and_deletes_nothing(
    make_app: AppMaker,
) -> None:
    target = make_app("compliance_mode = 'sox'", "audit_log_retention = 30")

    purged = runner.invoke(app, ["audit", "purge", target])

    assert purged.exit_code == 2
    assert "at least 2557 days" in purged.stderr
    assert "Traceback" not in purged.stderr
    assert json.loads(runner.invoke(app, ["audit", "verify", make_app(), "--json"]).stdout)["checked"] == 3
