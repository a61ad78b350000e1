"""The full-pipeline rows run with tenancy on, and their pre-flight checks fail when it is off."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from bench.check import (
    CONCURRENT_WORKFLOWS,
    REQUESTS_PER_HOUR,
    SUM,
    WrongAnswerError,
    check_authorization_refused,
    check_quota_counted,
    check_tenant_refused,
    tenant_usage,
)
from bench.load import lua_script
from bench.nexus_server import (
    BASE_DOMAIN,
    BENCH_USER,
    SEALED,
    TENANT,
    TENANT_HOST,
    TENANT_QUOTAS,
    Profile,
    build_app,
)
from bench.report import FULL_PIPELINE_NOTE

from nexus.backends.prometheus import PrometheusMeter
from nexus.core.tenancy.model import IsolationLevel, Resource
from nexus.core.tenancy.routing import RoutingRules, TenantIndex, TenantRouter
from nexus.enterprise.tenancy import TenantManager


def _problem(status: int, code: str) -> str:
    return json.dumps({"type": f"https://nexus.dev/errors/{code}", "status": status, "code": code})


def test_a_key_refused_off_its_tenants_route_as_tenant_not_found_passes() -> None:
    check_tenant_refused(404, _problem(404, "tenant_not_found"))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, json.dumps({"outputs": {"add": {"result": SUM}}})),  # tenancy off: the key works anywhere
        (404, _problem(404, "workflow_not_found")),
        (403, _problem(403, "forbidden")),
        (401, _problem(401, "not_authenticated")),
        (404, "not json"),
    ],
)
def test_anything_but_tenant_not_found_off_the_route_fails_the_row(status: int, body: str) -> None:
    with pytest.raises(WrongAnswerError, match="tenancy is not deciding"):
        check_tenant_refused(status, body)


@pytest.mark.parametrize(("status", "code"), [(403, "forbidden"), (404, "workflow_not_found")])
def test_sealed_refused_by_authorization_passes(status: int, code: str) -> None:
    check_authorization_refused(status, _problem(status, code))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, json.dumps({"outputs": {"add": {"result": SUM}}})),
        (404, _problem(404, "tenant_not_found")),  # refused by routing: authorization never decided
        (401, _problem(401, "not_authenticated")),
    ],
)
def test_sealed_run_or_refused_before_authorization_fails_the_row(status: int, body: str) -> None:
    with pytest.raises(WrongAnswerError, match="authorization is not deciding"):
        check_authorization_refused(status, body)


def test_tenant_usage_is_read_from_the_meters_own_exposition_text() -> None:
    meter = PrometheusMeter()
    meter.observe_tenant_usage(TENANT, REQUESTS_PER_HOUR, 42)
    meter.observe_tenant_usage(TENANT, CONCURRENT_WORKFLOWS, 0)
    meter.observe_tenant_usage("other", REQUESTS_PER_HOUR, 7)

    text = meter.render()[0].decode()

    assert tenant_usage(text, TENANT) == {REQUESTS_PER_HOUR: 42.0, CONCURRENT_WORKFLOWS: 0.0}
    assert tenant_usage(text, "absent") == {}


def test_one_call_counted_once_with_its_lease_taken_and_released_passes() -> None:
    check_quota_counted({}, {REQUESTS_PER_HOUR: 1.0, CONCURRENT_WORKFLOWS: 0.0})
    check_quota_counted(
        {REQUESTS_PER_HOUR: 5.0, CONCURRENT_WORKFLOWS: 0.0},
        {REQUESTS_PER_HOUR: 6.0, CONCURRENT_WORKFLOWS: 0.0},
    )


@pytest.mark.parametrize(
    ("after", "message"),
    [
        ({}, "counted 0"),  # no quota counted at all
        ({REQUESTS_PER_HOUR: 2.0, CONCURRENT_WORKFLOWS: 0.0}, "counted 2"),
        ({REQUESTS_PER_HOUR: 1.0}, "never taken"),
        ({REQUESTS_PER_HOUR: 1.0, CONCURRENT_WORKFLOWS: 1.0}, "at 1 after the run ended"),
    ],
)
def test_quota_not_counted_or_lease_not_taken_and_released_fails_the_row(
    after: dict[str, float], message: str
) -> None:
    with pytest.raises(WrongAnswerError, match=message):
        check_quota_counted({}, after)


def test_wrk_sends_the_tenants_host_header() -> None:
    script = lua_script("{}", {"Host": TENANT_HOST, "Authorization": "Bearer k"})

    assert f'wrk.headers["Host"] = "{TENANT_HOST}"' in script.splitlines()


def test_the_note_says_tenancy_is_on_and_what_it_costs() -> None:
    assert "does not exist" not in FULL_PIPELINE_NOTE
    for part in ("subdomain", "membership", "rate limit", "requests-per-hour", "concurrent-workflow"):
        assert part in FULL_PIPELINE_NOTE


def test_full_server_serves_add_to_the_bench_tenant_with_quotas_that_count(tmp_path: Path) -> None:
    app = build_app(0, 0, tmp_path, profile=Profile.FULL)

    manager = app.tenancy.manager
    assert isinstance(manager, TenantManager)
    assert manager.isolation_level is IsolationLevel.MODERATE
    assert app.tenancy.base_domain == BASE_DOMAIN
    assert app._catalog.get("add").tenant_scoped
    assert app._catalog.get(SEALED).tenant_scoped
    tenant = asyncio.run(app.get_tenant(TENANT))
    assert tenant is not None
    assert tenant.config.api_subdomain == TENANT
    router = TenantRouter(
        RoutingRules.from_mapping(app.tenancy.routing, base_domain=app.tenancy.base_domain),
        TenantIndex.of([tenant]),
    )
    assert router.for_api(TENANT_HOST, "127.0.0.1") == tenant  # the Host the harness sends
    assert router.for_api("127.0.0.1", "127.0.0.1") is None  # the platform's route
    profile = manager.quota_book().profile_of(tenant)  # the limits the bench tenant counts against
    assert {name: profile.limit(Resource(name)) for name in TENANT_QUOTAS} == TENANT_QUOTAS
    keys = {key.name: key.tenants for key in asyncio.run(app.list_api_keys())}
    assert keys == {"bench": frozenset({TENANT}), "bench-ops": frozenset()}
    users = {user.username: user.tenants for user in asyncio.run(app.list_users())}
    assert users == {BENCH_USER: frozenset({TENANT})}
    assert (tmp_path / "api_key").read_text() != (tmp_path / "ops_key").read_text()


def test_default_server_has_no_tenancy(tmp_path: Path) -> None:
    app = build_app(0, 0, tmp_path, profile=Profile.DEFAULTS)

    assert app.tenancy.manager is None
    assert not app._catalog.get("add").tenant_scoped
