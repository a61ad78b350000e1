"""Authorization conformance: the source document's roles and policies, and more, on every channel.

Every combination of user (role set and attributes) x channel x workflow x action (read, execute)
is tried for real over REST, the `nexus` CLI and MCP, and must give the outcome an oracle computes
from the permission table and the policies alone: allow, deny (forbidden) or invisible (not found,
and absent from listings). Time policies run on a controlled clock, before and after hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import runpy
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from tests.e2e.identity import PASSWORD, login

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.testing import client_for
from nexus.testing.clients import CliClient
from nexus.testing.clock import FakeClock
from nexus.workflow.builder import WorkflowBuilder

SPEC = Path(__file__).resolve().parents[1] / "spec"
WORDS = {"api": "workflows", "cli": "commands", "mcp": "tools"}

# name -> (tags, metadata)
WORKFLOWS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "exec_dashboard": (("dashboards",), {}),
    "quarterly_report": (("reports",), {}),
    "health_probe": (("health",), {}),
    "status": ((), {}),
    "deploy": ((), {}),
    "cpu_monitor": (("monitoring_workflows",), {}),
    "restart_service": (("system_tools",), {}),
    "payroll": (("sensitive_workflows",), {}),
    "ledger": (("financial_data", "reports"), {}),
    "compliance_scan": (("compliance_tools",), {}),
    "secret_plans": (("classified_workflows",), {"classification_level": 3}),
    "press_kit": (("classified_workflows",), {"classification_level": 1}),
    "untagged": ((), {}),
}

# The document's three roles plus some that exercise inheritance, wildcards and assignment.
EXTRA_ROLES: dict[str, tuple[list[str], list[str]]] = {
    "auditor": (["mcp:read:tools", "api:read:workflows"], ["executive"]),
    "admin": (["*:*:*"], []),
    "reader": (["*:read:*"], []),
}

# username -> (roles on the user record, attributes)
USERS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "exec_us": (["executive"], {"location": "US", "clearance_level": 2}),
    "dev_eu": (["developer"], {"location": "EU", "clearance_level": "3"}),  # a directory's string
    "dev_apac": (["developer"], {"location": "APAC", "clearance_level": 1}),
    "dev_bare": (["developer"], {}),  # no attributes: every policy reading them fails closed
    "ops": (["operator"], {"location": "US", "clearance_level": 1}),
    "exec_ops": (["executive", "operator"], {"location": "EU", "clearance_level": 2}),
    "auditor": (["auditor"], {"location": "US", "clearance_level": 5}),
    "admin": (["admin"], {"location": "EU", "clearance_level": 5}),
    "reader": (["reader"], {"location": "US", "clearance_level": 3}),
    "nobody": ([], {"location": "US", "clearance_level": 9}),
    "assigned": ([], {"location": "US", "clearance_level": 1}),  # operator by rbac.assign_role
}
ASSIGNED = {"assigned": ["operator"]}


# -- the oracle: the permission table and the policies, read independently of Nexus --------------


def _block(name: str, nexus: Nexus) -> dict[str, Any]:
    return runpy.run_path(str(SPEC / name), init_globals={"nexus": nexus})


def _role_table(rbac_block: dict[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
    """The document's roles as the block defined them, plus EXTRA_ROLES."""
    table = {
        role.name: ([p.text for p in role.permissions], list(role.inherits))
        for role in rbac_block["rbac"].roles()
    }
    return {**table, **EXTRA_ROLES}


def _held(user: str, table: Mapping[str, tuple[list[str], list[str]]]) -> set[str]:
    held = set(USERS[user][0]) | set(ASSIGNED.get(user, []))
    pending = list(held)
    while pending:
        for parent in table.get(pending.pop(), ([], []))[1]:
            if parent not in held:
                held.add(parent)
                pending.append(parent)
    return held


def _permits(permission: str, channel: str, action: str, names: Iterable[str]) -> bool:
    c, a, r = permission.split(":", 2)
    return (
        c in ("*", channel)
        and (a in ("*", action) or action == "read")  # any action on a target implies reading it
        and (r == "*" or r in names)
    )


def _policies_hold(user: str, channel: str, workflow: str, clock_time: time, word: str) -> bool:
    tags, metadata = WORKFLOWS[workflow]
    names = {workflow, *tags, word}
    attributes = USERS[user][1]
    checks = []
    if channel in ("api", "cli") and names & {"sensitive_workflows", "financial_data"}:
        checks.append(time(9) <= clock_time <= time(17))
    if channel == "mcp" and "compliance_tools" in names:
        checks.append(attributes.get("location") in ("US", "EU"))
    if "classified_workflows" in names:
        clearance = attributes.get("clearance_level")
        checks.append(clearance is not None and float(clearance) >= metadata["classification_level"])
    return all(checks)


def oracle(
    user: str,
    channel: str,
    workflow: str,
    action: str,
    table: Mapping[str, tuple[list[str], list[str]]],
    at: time,
    word: str | None = None,
) -> str:
    """`word` is the surface's name for all workflows: the channel's, or "resources" on MCP."""
    word = word or WORDS[channel]
    tags, _ = WORKFLOWS[workflow]
    names = {workflow, *tags, word}
    permissions = [p for role in _held(user, table) for p in table.get(role, ([], []))[0]]
    readable = any(_permits(p, channel, "read", names) for p in permissions) and _policies_hold(
        user, channel, workflow, at, word
    )
    if action == "read":
        return "allow" if readable else "invisible"
    if not readable:
        return "invisible"
    allowed = any(_permits(p, channel, action, names) for p in permissions)
    return "allow" if allowed else "deny"


# -- the served app -----------------------------------------------------------------------------


@dataclass
class Served:
    server: RunningNexus
    tokens: dict[tuple[str, Channel], str]
    table: dict[str, tuple[list[str], list[str]]]
    clock: FakeClock
    app: Nexus


def _workflow() -> Any:
    builder = WorkflowBuilder()
    builder.add_node("PythonCodeNode", "run", {"code": "result = {'done': True}"})
    return builder.build()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    state = tmp_path_factory.mktemp("authz") / "state.db"
    app = Nexus(api_port=0, mcp_port=0, state_url=f"sqlite:///{state}", enable_auth=True)
    app.auth.password_time_cost = 1
    app.auth.password_memory_kib = 1024
    for name, (tags, metadata) in WORKFLOWS.items():
        app.register(name, _workflow(), description=f"The {name} workflow", tags=tags, metadata=metadata)
    rbac = _block("rbac.py", app)
    abac = _block("abac.py", app)
    for name, (permissions, parents) in EXTRA_ROLES.items():
        rbac["rbac"].create_role(name, permissions, inherits=parents)
    for user, roles in ASSIGNED.items():
        for role in roles:
            rbac["rbac"].assign_role(role, user=user)
    clock = FakeClock(datetime(2026, 3, 2, 10, 30, tzinfo=UTC))  # a Monday, business hours
    abac["abac"].clock = clock
    for user, (roles, attributes) in USERS.items():
        await app.create_user(user, PASSWORD, roles=roles, attributes=attributes)
    server = await asyncio.to_thread(app.start_in_thread)
    try:
        tokens = {}
        for user in USERS:
            for channel in Channel:
                grant = await login(server, channel, user)
                assert grant.status == 200, grant.body
                tokens[(user, channel)] = grant.body["access_token"]
        yield Served(server, tokens, _role_table(rbac), clock, app)
    finally:
        await asyncio.to_thread(server.stop)


def _outcome(outcome: Outcome) -> str:
    return {Outcome.SUCCESS: "allow", Outcome.FORBIDDEN: "deny", Outcome.NOT_FOUND: "invisible"}.get(
        outcome, f"unexpected {outcome}"
    )


async def _observe(
    served: Served, channel: Channel, at: time, workflows: Iterable[str]
) -> dict[tuple[str, str, str], str]:
    """(user, workflow, action) -> outcome as `channel` shows it: listings for read, runs for execute."""
    seen: dict[tuple[str, str, str], str] = {}
    gate = asyncio.Semaphore(4)  # CLI calls are processes; a few at a time on two cores
    wanted = list(workflows)

    async def one_user(user: str) -> None:
        client = client_for(
            channel, served.server.api_url, served.server.mcp_url, served.tokens[(user, channel)]
        )
        async with gate:
            listing = await client.list_workflows()
        assert listing.ok, (user, listing)
        listed = {item["name"] for item in listing.body["workflows"]}
        for workflow in wanted:
            seen[(user, workflow, "read")] = "allow" if workflow in listed else "invisible"
            async with gate:
                reply = await client.execute(workflow, {})
            seen[(user, workflow, "execute")] = _outcome(reply.outcome)

    await asyncio.gather(*(one_user(user) for user in USERS))
    return seen


def _expected(
    served: Served, channel: Channel, at: time, workflows: Iterable[str]
) -> dict[tuple[str, str, str], str]:
    return {
        (user, workflow, action): oracle(user, channel.value, workflow, action, served.table, at)
        for user in USERS
        for workflow in workflows
        for action in ("read", "execute")
    }


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("channel", list(Channel), ids=[c.value for c in Channel])
async def test_every_role_set_workflow_and_action_gets_the_oracles_outcome(
    served: Served, channel: Channel
) -> None:
    served.clock.set(datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
    seen = await _observe(served, channel, time(10, 30), WORKFLOWS)
    expected = _expected(served, channel, time(10, 30), WORKFLOWS)
    wrong = {key: (seen[key], want) for key, want in expected.items() if seen[key] != want}
    assert not wrong, f"{len(wrong)} of {len(expected)} outcomes differ (seen, oracle): {wrong}"
    # The matrix is not degenerate: all three outcomes occur on every channel.
    assert set(expected.values()) == {"allow", "deny", "invisible"}


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("channel", list(Channel), ids=[c.value for c in Channel])
async def test_after_hours_the_time_policy_hides_sensitive_workflows(
    served: Served, channel: Channel
) -> None:
    timed = ["payroll", "ledger", "quarterly_report"]
    served.clock.set(datetime(2026, 3, 2, 19, 0, tzinfo=UTC))
    try:
        seen = await _observe(served, channel, time(19), timed)
    finally:
        served.clock.set(datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
    expected = _expected(served, channel, time(19), timed)
    assert seen == expected
    if channel is not Channel.MCP:  # business_hours_only covers api and cli
        assert seen[("admin", "payroll", "execute")] == "invisible"
    else:
        assert seen[("admin", "payroll", "execute")] == "allow"


@pytest.mark.asyncio(loop_scope="module")
async def test_each_decision_is_audited_with_its_reason(served: Served) -> None:
    api = Channel.API
    ops = client_for(api, served.server.api_url, served.server.mcp_url, served.tokens[("ops", api)])
    assert (await ops.execute("cpu_monitor", {})).ok
    denied = await ops.execute("deploy", {})  # operator may run deploy on the CLI only
    assert denied.outcome is Outcome.NOT_FOUND
    dev = client_for(api, served.server.api_url, served.server.mcp_url, served.tokens[("dev_bare", api)])
    assert (await dev.execute("secret_plans", {})).outcome is Outcome.NOT_FOUND
    records = await served.app.audit_log(limit=50)
    by_workflow = {(r.workflow, r.outcome): r.reason for r in records}
    assert by_workflow[("cpu_monitor", Outcome.SUCCESS)] == (
        "allowed: role 'operator' grants 'api:execute:monitoring_workflows'"
    )
    assert (
        "no permission of the roles held (operator) allows api:execute on workflow 'deploy'"
        in (by_workflow[("deploy", Outcome.NOT_FOUND)])
    )
    assert by_workflow[("secret_plans", Outcome.NOT_FOUND)] == (
        "denied: policy 'data_access_control' (permit) undecided: missing user.clearance_level"
    )


def _health_oracle(user: str, channel: str, table: Mapping[str, tuple[list[str], list[str]]]) -> str:
    """No policy names the health surface: the permission table alone decides."""
    permissions = [p for role in _held(user, table) for p in table.get(role, ([], []))[0]]
    return "allow" if any(_permits(p, channel, "read", {"health"}) for p in permissions) else "deny"


async def _health(served: Served, channel: Channel, user: str) -> str:
    token = served.tokens[(user, channel)]
    if channel is Channel.API:
        async with httpx2.AsyncClient(timeout=30) as http:
            answer = await http.get(
                f"{served.server.api_url}/health/detail", headers={"authorization": f"Bearer {token}"}
            )
        assert answer.status_code in (200, 403), answer.text
        return "allow" if answer.status_code == 200 else "deny"
    if channel is Channel.CLI:
        code, _, err = await CliClient(served.server.api_url, token).run("health", "--json")
        assert code in (0, 77), err
        return "allow" if code == 0 else "deny"
    async with _mcp(served, token) as client:
        try:
            await client.read_resource("nexus://health")
        except MCPError as error:
            refused = error.error.data["code"]
        else:
            return "allow"
    assert refused == "forbidden"
    return "deny"


@contextlib.asynccontextmanager
async def _mcp(served: Served, token: str) -> AsyncIterator[Any]:
    headers = {"authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(served.server.mcp_url, http_client=http)) as client,
    ):
        yield client


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("channel", list(Channel), ids=[c.value for c in Channel])
async def test_health_detail_follows_the_permission_table_on_every_channel(
    served: Served, channel: Channel
) -> None:
    seen = dict(
        zip(USERS, await asyncio.gather(*(_health(served, channel, user) for user in USERS)), strict=True)
    )
    expected = {user: _health_oracle(user, channel.value, served.table) for user in USERS}
    assert seen == expected
    assert set(expected.values()) == {"allow", "deny"}


@pytest.mark.asyncio(loop_scope="module")
async def test_mcp_resources_list_the_workflows_each_user_may_read_as_resources(served: Served) -> None:
    for user in USERS:
        async with _mcp(served, served.tokens[(user, Channel.MCP)]) as client:
            listing = await client.list_resources()
        listed = {
            str(r.uri).removeprefix("nexus://workflows/")
            for r in listing.resources
            if "workflows" in str(r.uri)
        }
        expected = {
            w
            for w in WORKFLOWS
            if oracle(user, "mcp", w, "read", served.table, time(10, 30), "resources") == "allow"
        }
        assert listed == expected, user
    # The executive's mcp:read:resources shows workflow descriptions, but not one tool.
    assert oracle("exec_us", "mcp", "status", "read", served.table, time(10, 30), "resources") == "allow"
    assert oracle("exec_us", "mcp", "status", "read", served.table, time(10, 30)) == "invisible"
