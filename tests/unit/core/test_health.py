"""Readiness: probes of every backend, answered from the last result within the interval."""

from __future__ import annotations

import asyncio

import pytest

from nexus.core.health import Readiness
from nexus.errors import DependencyUnavailableError
from nexus.testing.clock import FakeClock

INTERVAL_S = 30.0


class Backend:
    """A backend whose ping counts calls and answers as told (or waits until let through)."""

    def __init__(self) -> None:
        self.pings = 0
        self.answers = True
        self.gate: asyncio.Event | None = None

    async def ping(self) -> None:
        self.pings += 1
        if self.gate is not None:
            await self.gate.wait()
        if not self.answers:
            raise DependencyUnavailableError("The backend is unavailable.")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_readiness_answers_from_the_last_probe_until_it_is_older_than_the_interval(
    clock: FakeClock,
) -> None:
    state, redis = Backend(), Backend()
    readiness = Readiness({"state": state.ping, "redis": redis.ping}, clock, interval_s=INTERVAL_S)

    assert await readiness.is_ready()
    clock.advance(INTERVAL_S)
    assert await readiness.is_ready()
    assert (state.pings, redis.pings) == (1, 1)

    clock.advance(0.001)
    assert await readiness.is_ready()
    assert (state.pings, redis.pings) == (2, 2)


async def test_a_backend_that_stops_answering_is_seen_at_the_next_probe_and_named(clock: FakeClock) -> None:
    state, redis = Backend(), Backend()
    readiness = Readiness({"state": state.ping, "redis": redis.ping}, clock, interval_s=INTERVAL_S)
    assert await readiness.is_ready()

    redis.answers = False
    assert await readiness.is_ready()  # within the interval: the last probe still stands
    clock.advance(INTERVAL_S + 1)

    assert not await readiness.is_ready()
    assert readiness.last is not None
    assert readiness.last.failed == ("redis",)


async def test_a_backend_that_does_not_answer_in_time_counts_as_not_answering(clock: FakeClock) -> None:
    slow = Backend()
    slow.gate = asyncio.Event()  # never set
    readiness = Readiness({"state": slow.ping}, clock, interval_s=INTERVAL_S, timeout_s=0.01)

    assert not await readiness.is_ready()


async def test_callers_arriving_while_a_probe_runs_share_it(clock: FakeClock) -> None:
    state = Backend()
    state.gate = asyncio.Event()
    readiness = Readiness({"state": state.ping}, clock, interval_s=INTERVAL_S)

    callers = [asyncio.create_task(readiness.is_ready()) for _ in range(5)]
    await asyncio.sleep(0)
    state.gate.set()

    assert await asyncio.gather(*callers) == [True] * 5
    assert state.pings == 1


async def test_a_caller_that_stops_waiting_leaves_the_probe_running_for_the_others(clock: FakeClock) -> None:
    state = Backend()
    state.gate = asyncio.Event()
    readiness = Readiness({"state": state.ping}, clock, interval_s=INTERVAL_S)
    impatient = asyncio.create_task(readiness.probe())
    patient = asyncio.create_task(readiness.probe())
    await asyncio.sleep(0)

    impatient.cancel()
    state.gate.set()

    assert (await patient).ready
    assert impatient.cancelled()
    assert state.pings == 1


async def test_close_cancels_a_probe_under_way(clock: FakeClock) -> None:
    state = Backend()
    state.gate = asyncio.Event()
    readiness = Readiness({"state": state.ping}, clock, interval_s=INTERVAL_S)
    waiting = asyncio.create_task(readiness.probe())
    await asyncio.sleep(0)

    await readiness.close()

    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert readiness.last is None


async def test_an_answer_again_makes_the_node_ready_again(clock: FakeClock) -> None:
    state = Backend()
    state.answers = False
    readiness = Readiness({"state": state.ping}, clock, interval_s=INTERVAL_S)
    assert not await readiness.is_ready()

    state.answers = True
    clock.advance(INTERVAL_S + 1)

    assert await readiness.is_ready()
    assert readiness.last is not None
    assert readiness.last.failed == ()
