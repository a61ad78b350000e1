"""`MemoryLeaseGauge` on a fake clock: exactly when a lease stops counting."""

from __future__ import annotations

import pytest

from nexus.backends.lease_gauge import MAX_TTL_S, MemoryLeaseGauge, check_lease_terms
from nexus.errors import ConfigurationError
from nexus.testing.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gauge(clock: FakeClock) -> MemoryLeaseGauge:
    return MemoryLeaseGauge(clock)


async def test_a_lease_counts_until_its_ttl_and_not_at_it(gauge: MemoryLeaseGauge, clock: FakeClock) -> None:
    await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=10)

    clock.advance(9.999)
    assert await gauge.count("tenant-a") == 1
    clock.advance(0.001)
    assert await gauge.count("tenant-a") == 0


async def test_renewing_measures_the_new_ttl_from_the_renewal(
    gauge: MemoryLeaseGauge, clock: FakeClock
) -> None:
    await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=10)
    clock.advance(8)

    assert await gauge.renew("tenant-a", "run-1", ttl_s=5) is True

    clock.advance(4.9)
    assert await gauge.count("tenant-a") == 1
    clock.advance(0.1)
    assert await gauge.count("tenant-a") == 0


async def test_acquiring_a_held_lease_again_with_a_shorter_ttl_shortens_it(
    gauge: MemoryLeaseGauge, clock: FakeClock
) -> None:
    await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=60)

    assert await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=1) == 1

    clock.advance(1)
    assert await gauge.acquire("tenant-a", "run-2", limit=1, ttl_s=60) == 1


async def test_a_lease_id_whose_lease_expired_is_taken_anew_within_the_limit(
    gauge: MemoryLeaseGauge, clock: FakeClock
) -> None:
    await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=1)
    clock.advance(2)
    await gauge.acquire("tenant-a", "run-2", limit=1, ttl_s=60)

    assert await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=60) is None


async def test_close_drops_every_lease(gauge: MemoryLeaseGauge) -> None:
    await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=60)

    await gauge.close()

    assert await gauge.count("tenant-a") == 0


async def test_without_a_clock_the_gauge_runs_on_system_time() -> None:
    gauge = MemoryLeaseGauge()

    assert await gauge.acquire("tenant-a", "run-1", limit=1, ttl_s=60) == 1
    assert await gauge.count("tenant-a") == 1


def test_a_ttl_of_up_to_a_year_is_accepted_and_longer_is_rejected() -> None:
    check_lease_terms(ttl_s=MAX_TTL_S, limit=1)

    with pytest.raises(ConfigurationError, match="at most"):
        check_lease_terms(ttl_s=MAX_TTL_S * 2, limit=1)
