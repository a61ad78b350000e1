"""The authorization micro-benchmark runs end to end at a tiny size and cannot time a no-op."""

import contextlib
import io
import json
import re
from typing import Any

import pytest
from bench.authz import SMALL, CheckFailedError, build_world, check_sentinels, main, summarize

from nexus.core.authorization import ALLOW_ALL, AllowAll


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str]:
    """One `python -m bench.authz --small`: its exit code, its JSON report and what it printed."""
    output = tmp_path_factory.mktemp("bench") / "authz.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["--small", "--output", str(output)])
    return code, json.loads(output.read_text()), printed.getvalue()


def test_small_run_prints_the_table_and_writes_every_scenario(
    small_run: tuple[int, dict[str, Any], str],
) -> None:
    code, report, printed = small_run

    rows = {row["key"]: row for row in report["rows"]}
    assert code == 0
    assert rows["warm"]["decisions"] == SMALL.decisions
    assert rows["uniform"]["decisions"] == SMALL.uniform_decisions
    assert rows["cold"]["decisions"] == SMALL.cold_rounds * SMALL.cold_decisions
    assert all(0 < row["p50_us"] <= row["p99_us"] for row in rows.values())
    assert rows["warm"]["status"] in {"pass", "MISS"}
    assert "warm caches, realistic mix" in printed
    assert "p50 < 20 us" in printed


def test_small_world_holds_exactly_the_configured_roles_permissions_and_policies(
    small_run: tuple[int, dict[str, Any], str],
) -> None:
    setup = small_run[1]["setup"]

    assert setup["roles_defined"] == SMALL.roles
    assert setup["permissions_defined"] == SMALL.permissions
    assert setup["policies_defined"] == SMALL.policies
    assert setup["checked_decisions"] > 0


def test_mix_allows_and_denies_by_roles_and_by_policies(small_run: tuple[int, dict[str, Any], str]) -> None:
    mix = small_run[1]["mix"]

    assert mix["allowed"] > 0.3
    assert mix["denied_by_roles"] > 0
    assert mix["denied_by_policy"] > 0


def test_an_authorizer_that_allows_everything_fails_the_known_decisions() -> None:
    world = build_world(SMALL)
    world.authorizer = AllowAll()

    with pytest.raises(CheckFailedError, match=re.escape(f"got {ALLOW_ALL}")):
        check_sentinels(world)


def test_the_real_authorizer_passes_the_known_decisions() -> None:
    assert check_sentinels(build_world(SMALL)) > 10


def test_percentiles_and_verdict_come_from_the_sorted_durations() -> None:
    durations = [90_000, 50_000, *([1_000] * 98)]

    fast = summarize("warm", "warm", durations, verdict=True)
    slow = summarize("warm", "warm", [30_000] * 10, verdict=True)

    assert (fast.p50_us, fast.p99_us, fast.status) == (1.0, 50.0, "pass")
    assert slow.status == "MISS"
    assert summarize("cold", "cold", durations).status == "-"
