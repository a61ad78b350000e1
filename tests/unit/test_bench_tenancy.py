"""The routing benchmark measures real lookups and says whether cost stays flat."""

from __future__ import annotations

import pytest
from bench import tenancy

from nexus.core.tenancy.routing import RoutingRules, TenantIndex, TenantRouter


def test_a_small_run_measures_every_route_at_every_size() -> None:
    table = tenancy.measure(sizes=(3, 30))
    assert set(table) == {"api host", "cli prefix", "mcp port", "mcp path", "gate (route + member)"}
    assert all(set(by_size) == {"3", "30"} and min(by_size.values()) > 0 for by_size in table.values())


def test_the_table_calls_a_route_that_grows_with_tenants_by_its_name() -> None:
    table = {"api host": {"10": 100.0, "1000": 120.0}, "mcp path": {"10": 100.0, "1000": 400.0}}
    lines = tenancy.render(table, (10, 1000)).splitlines()
    assert lines[1].split()[-2:] == ["1.20", "flat"]
    assert lines[2].split()[-2:] == ["4.00", "GROWS"]


def test_a_router_that_answers_wrongly_is_caught_before_timing() -> None:
    population = tenancy.tenants(5)
    wrong = TenantRouter(
        RoutingRules.from_mapping({}, base_domain=tenancy.BASE), TenantIndex.of(population[1:])
    )
    with pytest.raises(tenancy.WrongRouteError):
        tenancy.check(wrong, population)
