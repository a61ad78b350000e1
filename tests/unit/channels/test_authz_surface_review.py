"""Edge cases found reviewing the authorization surfaces (explain, health detail, MCP resources, CLI):
hostile drafts, unnameable actions, listings that offer what they refuse, odd JSON in CLI options.

The served app, its keys and helpers are those of `test_authz_surfaces`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tests.unit.channels.test_authz_surfaces import ROLES, Served, build_app, explain, request_id
from typer.testing import CliRunner

from nexus.channels.cli.authz import parse_attributes
from nexus.console import app as cli
from nexus.core.types import Channel, Outcome

served = pytest.mark.asyncio(loop_scope="module")
runner = CliRunner()
# Nothing listens here: a command that gets as far as calling the server fails to connect.
DEAD_URL = "http://127.0.0.1:9"
EXPLAIN_ARGS = (
    *("authz", "explain", "--role", "r", "--workflow", "add"),
    *("--channel", "api", "--action", "read"),
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def s(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    """The app of `test_authz_surfaces` (roles, policies, one key per role), served for this module."""
    app = build_app(tmp_path_factory.mktemp("authz-surface-review"))
    async with app.serving() as running:
        keys = {role: await app.create_api_key(role, roles=[role]) for role in ROLES}
        yield Served(app, running, keys)


# -- explain: body validation ---------------------------------------------------------------------


@served
async def test_a_draft_time_zone_too_long_to_be_a_zone_answers_422(s: Served) -> None:
    draft = {"abac": {"time_zone": "A" * 300, "policies": {}}}
    query = {"roles": ["reader"], "channel": "api", "action": "read", "workflow": "add", "draft": draft}
    response = await explain(s, Channel.API, "auditor", query)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_input"
    [record] = await s.records("_authz", request_id(response))
    assert record.outcome == Outcome.INVALID_INPUT


@served
@pytest.mark.parametrize("action", ["EXECUTE", "read write", "x" * 300])
async def test_explain_refuses_an_action_no_permission_can_name(s: Served, action: str) -> None:
    query = {"roles": ["stranger"], "channel": "api", "action": action, "workflow": "add"}
    response = await explain(s, Channel.API, "auditor", query)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_input"


@served
async def test_a_draft_with_a_long_inheritance_chain_is_explained_promptly(s: Served) -> None:
    # Each role inherits from the one before: resolving one role per pass would be quadratic.
    roles = {f"r{i}": {"permissions": [], "inherits": [f"r{i - 1}"] if i else []} for i in range(3000)}
    roles["r2999"]["permissions"] = ["api:read:add"]
    query = {"roles": ["r2999"], "channel": "api", "action": "read", "workflow": "add"}
    started = time.perf_counter()
    response = await explain(s, Channel.API, "auditor", {**query, "draft": {"rbac": {"roles": roles}}})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.json()["permission"] == "role 'r2999' grants 'api:read:add'"
    # About 100 kB of draft: linear work takes a fraction of a second, the quadratic one over 4 s.
    assert elapsed < 2.0, f"explain took {elapsed:.1f} s for a 3,000-role chain"


# -- MCP resources -------------------------------------------------------------------------------


@served
async def test_resources_list_leaves_out_health_for_a_caller_who_may_not_read_it(s: Served) -> None:
    async with s.mcp("stranger", "legacy") as client:
        listing = await client.list_resources()
    assert [resource.uri for resource in listing.resources] == []


# -- nexus authz explain: the draft file and attributes -------------------------------------------


def test_a_draft_file_nested_too_deeply_exits_2_before_any_call(tmp_path: Path) -> None:
    draft = tmp_path / "draft.json"
    draft.write_text("[" * 100_000 + "]" * 100_000)
    result = runner.invoke(cli, ["--url", DEAD_URL, *EXPLAIN_ARGS, "--draft", str(draft)])
    assert result.exit_code == 2, result.stderr
    assert "Invalid draft" in result.stderr


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_draft_file_with_a_non_finite_number_exits_2_before_any_call(tmp_path: Path, value: str) -> None:
    draft = tmp_path / "draft.json"
    draft.write_text(f'{{"abac": {{"policies": {{}}, "weight": {value}}}}}')
    result = runner.invoke(cli, ["--url", DEAD_URL, *EXPLAIN_ARGS, "--draft", str(draft)])
    assert result.exit_code == 2, result.stderr


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_attribute_stays_text(raw: str) -> None:
    # NaN and Infinity are not JSON (RFC 8259): like any other non-JSON value they stay text.
    assert parse_attributes([f"level={raw}"]) == {"level": raw}


def test_a_deeply_nested_attribute_stays_text() -> None:
    raw = "[" * 100_000
    assert parse_attributes([f"level={raw}"]) == {"level": raw}
