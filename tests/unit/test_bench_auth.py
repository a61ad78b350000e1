"""The "auth on" rows: everything of the full pipeline but tenancy, checked deciding before timing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bench import check
from bench.measure import ROWS, _login
from bench.nexus_server import (
    BENCH_ROLE,
    BENCH_USER,
    OPS_ROLE,
    SEALED,
    UNREACHED_RATE_LIMIT,
    Profile,
    build_app,
    parse_args,
)
from bench.report import AUTH_ON_NOTE, SPECS

from nexus import Nexus
from nexus.enterprise.auth import ABACPolicyEngine, RBACManager


def test_auth_server_has_auth_rbac_abac_rate_limit_and_metrics_on_and_no_tenancy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXUS_BASE_DOMAIN", "example.test")  # a deployment's, not the profile's

    app = build_app(0, 0, tmp_path, profile=Profile.AUTH)

    assert app.options.enable_auth
    assert app.options.enable_monitoring
    assert app.options.rate_limit == UNREACHED_RATE_LIMIT
    assert isinstance(app._authz.rbac, RBACManager)
    assert isinstance(app._authz.abac, ABACPolicyEngine)
    assert app.tenancy.manager is None
    assert app.tenancy.base_domain is None
    assert not app._catalog.get("add").tenant_scoped
    assert not app._catalog.get(SEALED).tenant_scoped
    keys = {key.name: (key.roles, key.tenants) for key in asyncio.run(app.list_api_keys())}
    assert keys == {
        "bench": (frozenset({BENCH_ROLE}), frozenset()),
        "bench-ops": (frozenset({OPS_ROLE}), frozenset()),
    }
    users = {user.username: user.tenants for user in asyncio.run(app.list_users())}
    assert users == {BENCH_USER: frozenset()}


def test_auth_server_serves_add_to_the_key_and_a_platform_session_and_refuses_sealed(tmp_path: Path) -> None:
    app = build_app(0, 0, tmp_path, profile=Profile.AUTH)
    key = (tmp_path / "api_key").read_text().strip()

    asyncio.run(_exercise(app, key))


async def _exercise(app: Nexus, key: str) -> None:
    """What the harness does before timing, with its own requests (blocking, so off the loop)."""
    async with app.serving() as running:
        port = running.api_port
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        add = await asyncio.to_thread(check.post, port, check.REST_PATH, check.REST_BODY, headers)
        check.check_rest(*add)
        sealed = await asyncio.to_thread(
            check.post, port, f"/workflows/{SEALED}/execute", check.REST_BODY, headers
        )
        check.check_authorization_refused(*sealed)
        anonymous = {"Content-Type": "application/json"}
        status, text = await asyncio.to_thread(check.post, port, check.REST_PATH, check.REST_BODY, anonymous)
        assert status == 401, text
        token = await asyncio.to_thread(_login, port, None)
        session = {**headers, "Authorization": f"Bearer {token}"}
        check.check_rest(
            *await asyncio.to_thread(check.post, port, check.REST_PATH, check.REST_BODY, session)
        )


def test_each_nexus_server_gives_rows_the_report_has() -> None:
    keys = {spec.key for spec in SPECS}

    for rows in ROWS.values():
        assert {rows.rss, rows.rest, rows.second} <= keys
    assert (ROWS[Profile.AUTH].rest, ROWS[Profile.AUTH].second) == ("nexus_auth", "nexus_auth_session")


@pytest.mark.parametrize("key", ["nexus_auth", "nexus_auth_session"])
def test_auth_on_rows_are_ratios_to_the_floor_measured_next_to_them_with_a_third_as_target(key: str) -> None:
    (spec,) = [spec for spec in SPECS if spec.key == key]

    assert spec.floor == "floor_auth"
    assert spec.target is not None
    assert spec.target.min_ratio == 0.33
    assert "auth on" in spec.label


def test_the_auth_note_says_what_is_on_and_that_tenancy_is_not() -> None:
    for part in ("API key", "session", "RBAC", "ABAC", "rate limit", "audit", "metrics", "no tenancy"):
        assert part in AUTH_ON_NOTE


@pytest.mark.parametrize(
    ("flags", "profile"),
    [([], Profile.DEFAULTS), (["--profile", "auth"], Profile.AUTH), (["--full"], Profile.FULL)],
)
def test_server_command_line_picks_the_profile(flags: list[str], profile: Profile) -> None:
    args = parse_args(["--api-port", "1", "--mcp-port", "2", "--state-dir", "d", *flags])

    assert args.profile is profile
