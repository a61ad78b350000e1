"""Tenant routing cost at 10, 100 and 1,000 tenants: `python -m bench.tenancy`.

Times `TenantRouter` resolving the API host, the CLI prefix, the MCP port and the MCP path, each
for a random tenant (and a share of unknown routes), and the pipeline's whole tenant stage
(`TenantGate`: the route resolved through the directory, then the caller's membership checked),
and prints p50 per lookup for each size and the ratio of the largest to the smallest. Routing must
stay flat: every lookup is one dict read. Each lookup's answer is checked before timing, so a
broken router cannot look fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from nexus.backends.counters import MemoryCounterStore
from nexus.backends.lease_gauge import MemoryLeaseGauge
from nexus.backends.memory import MemoryTenantStore
from nexus.core.telemetry import SystemClock
from nexus.core.tenancy.directory import TenantDirectory
from nexus.core.tenancy.gate import TenantGate, TenantRefusedError
from nexus.core.tenancy.model import BUILTIN_PROFILES, Tenant, TenantConfig
from nexus.core.tenancy.policy import CrossTenantPolicy
from nexus.core.tenancy.quota import QuotaBook, TenantQuotas
from nexus.core.tenancy.routing import RoutingRules, TenantIndex, TenantRouter
from nexus.core.types import Principal, RouteKind, TenantRoute

SIZES = (10, 100, 1_000)
LOOKUPS = 50_000
BASE = "api.company.com"
RESULTS = Path(__file__).resolve().parent / "results" / "tenancy.json"
# Flat means the largest size costs at most this much more per lookup than the smallest.
FLAT_RATIO = 1.5


class WrongRouteError(Exception):
    """A lookup answered the wrong tenant: timing it would measure the wrong thing."""


def tenants(count: int) -> list[Tenant]:
    now = datetime(2026, 11, 26, tzinfo=UTC)
    return [
        Tenant(
            f"t{i:05d}",
            f"Tenant {i}",
            TenantConfig(api_subdomain=f"t{i:05d}", cli_prefix=f"c{i:05d}", mcp_port=10_000 + i),
            now,
        )
        for i in range(count)
    ]


def routes_to(tenant: Tenant | None) -> dict[str, TenantRoute]:
    """Each route kind as a channel hands it to the pipeline, naming `tenant` (None: nobody)."""
    tid = tenant.tenant_id if tenant else "nobody"
    return {
        "api host": TenantRoute(RouteKind.HOST, f"{tid}.{BASE}"),
        "cli prefix": TenantRoute(RouteKind.PREFIX, f"c{tid[1:]}" if tenant else "nobody"),
        "mcp port": TenantRoute(RouteKind.PORT, str(10_000 + int(tid[1:])) if tenant else "9"),
        "mcp path": TenantRoute(RouteKind.PATH, tid),
    }


def lookups(
    router: TenantRouter, population: Sequence[Tenant], rng: random.Random
) -> dict[str, list[Callable[[], object]]]:
    """Per route kind, a list of zero-argument lookups (10% for routes no tenant has): the
    router's `find`, which the pipeline's tenant stage calls."""
    picks = [rng.choice(population) if rng.random() < 0.9 else None for _ in range(LOOKUPS)]
    table: dict[str, list[Callable[[], object]]] = {}
    for pick in picks:
        for kind, route in routes_to(pick).items():
            table.setdefault(kind, []).append(partial(router.find, route, "192.0.2.1"))
    return table


def check(router: TenantRouter, population: Sequence[Tenant]) -> None:
    for tenant in (population[0], population[-1]):
        answers = [router.find(route, "192.0.2.1") for route in routes_to(tenant).values()]
        if any(answer != (True, tenant) for answer in answers):
            raise WrongRouteError(f"{tenant.tenant_id}: {answers}")
    if router.find(routes_to(None)["api host"], "192.0.2.1") != (True, None):
        raise WrongRouteError("an unknown subdomain found a tenant")


def p50_ns(calls: Sequence[Callable[[], object]]) -> float:
    clock = time.perf_counter_ns
    durations = []
    for call in calls:
        start = clock()
        call()
        durations.append(clock() - start)
    return statistics.median(durations)


async def gate_for(rules: RoutingRules, population: Sequence[Tenant]) -> TenantGate:
    store = MemoryTenantStore()
    for tenant in population:
        await store.add(tenant)
    clock = SystemClock()
    directory = TenantDirectory(store, rules, clock, refresh_s=3600, max_stale_s=3600)  # none while timing
    await directory.reload()
    quotas = TenantQuotas(
        QuotaBook(BUILTIN_PROFILES["standard"]), MemoryCounterStore(), MemoryLeaseGauge(clock)
    )
    return TenantGate(directory, quotas, CrossTenantPolicy(), lambda tenant: {})


async def gate_p50_ns(rules: RoutingRules, population: Sequence[Tenant], seed: int) -> float:
    """The pipeline's tenant stage per call: resolve the route (a mix of every kind, 10% naming no
    tenant), then admit a member of the tenant it names."""
    gate = await gate_for(rules, population)
    rng = random.Random(seed)
    calls: list[tuple[TenantRoute, Principal]] = []
    for index in range(LOOKUPS):
        tenant = rng.choice(population) if rng.random() < 0.9 else None
        tid = tenant.tenant_id if tenant else "nobody"
        route = list(routes_to(tenant).values())[index % 4]
        calls.append((route, Principal(id=f"key:{index}", kind="api_key", tenants=frozenset({tid}))))
    first = population[0]
    admitted = await gate.resolve(TenantRoute(RouteKind.HOST, f"{first.tenant_id}.{BASE}"), "")
    if admitted is None or admitted.tenant_id != first.tenant_id:
        raise WrongRouteError(f"the gate found {admitted} for {first.tenant_id}")
    try:
        gate.check_member(admitted, Principal(id="key:x", kind="api_key", tenants=frozenset({"other"})))
    except TenantRefusedError:
        pass
    else:
        raise WrongRouteError("the gate admitted a stranger")
    clock = time.perf_counter_ns
    durations = []
    for route, principal in calls:
        start = clock()
        with contextlib.suppress(TenantRefusedError):  # the 10% naming no tenant: refused
            gate.check_member(await gate.resolve(route, "192.0.2.1"), principal)
        durations.append(clock() - start)
    return statistics.median(durations[1000:])  # the first thousand warm up


ROUNDS = 3


def measure(sizes: Sequence[int] = SIZES, seed: int = 7) -> dict[str, dict[str, float]]:
    """p50 nanoseconds per lookup, by route kind and tenant count.

    The sizes take turns over `ROUNDS` rounds and each keeps its best p50, with the collector
    paused while timing: whichever size ran first would otherwise look cheapest, since the heap
    grows as the run goes on, whatever the number of tenants."""
    rules = RoutingRules.from_mapping({}, base_domain=BASE)
    populations = {size: tenants(size) for size in sizes}
    routers = {size: TenantRouter(rules, TenantIndex.of(populations[size])) for size in sizes}
    table: dict[str, dict[str, float]] = {}
    for size, router in routers.items():
        check(router, populations[size])
    for _ in range(ROUNDS):
        for size, router in routers.items():
            gc.collect()
            gc.disable()
            try:
                timed = lookups(router, populations[size], random.Random(seed))
                timed["gate (route + member)"] = []  # its own harness below
                for kind, calls in timed.items():
                    if kind == "gate (route + member)":
                        p50 = asyncio.run(gate_p50_ns(rules, populations[size], seed))
                    else:
                        p50_ns(calls[:1000])  # warm up
                        p50 = p50_ns(calls)
                    row = table.setdefault(kind, {})
                    row[str(size)] = min(p50, row.get(str(size), p50))
            finally:
                gc.enable()
    return table


def render(table: dict[str, dict[str, float]], sizes: Sequence[int]) -> str:
    head = ["route", *(f"{size} tenants" for size in sizes), f"{sizes[-1]}/{sizes[0]}", "result"]
    rows = [head]
    for kind, by_size in table.items():
        ratio = by_size[str(sizes[-1])] / by_size[str(sizes[0])]
        cells = [f"{by_size[str(size)]:.0f} ns" for size in sizes]
        rows.append([kind, *cells, f"{ratio:.2f}", "flat" if ratio <= FLAT_RATIO else "GROWS"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tenancy", description=__doc__)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    table = measure()
    print(render(table, SIZES))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"p50_ns": table, "sizes": SIZES, "lookups": LOOKUPS}, indent=2))
    print(f"JSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
