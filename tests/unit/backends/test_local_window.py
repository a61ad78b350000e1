"""The in-process moving-window storage: exact windows, and idle keys swept without a thread."""

from __future__ import annotations

import threading

import pytest

from nexus.backends import local_window
from nexus.backends.local_window import LocalWindowStorage


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(local_window.time, "time", fake.time)
    return fake


async def test_a_key_admits_exactly_limit_entries_per_window(clock: FakeTime) -> None:
    storage = LocalWindowStorage()
    admitted = [await storage.acquire_entry("k", 3, 60) for _ in range(4)]
    assert admitted == [True, True, True, False]
    clock.now += 60.001
    assert await storage.acquire_entry("k", 3, 60)


async def test_the_window_reports_its_oldest_entry_and_its_count(clock: FakeTime) -> None:
    storage = LocalWindowStorage()
    await storage.acquire_entry("k", 5, 60)
    clock.now += 10
    await storage.acquire_entry("k", 5, 60, amount=2)
    assert await storage.get_moving_window("k", 5, 60) == (1_000.0, 3)


def test_a_hit_reports_the_window_after_it_at_the_same_instant(clock: FakeTime) -> None:
    storage = LocalWindowStorage()
    assert storage.hit("k", 2, 60) == (True, 1_000.0, 1, 1_000.0)
    clock.now += 10
    assert storage.hit("k", 2, 60) == (True, 1_000.0, 2, 1_010.0)
    clock.now += 10
    assert storage.hit("k", 2, 60) == (False, 1_000.0, 2, 1_020.0)  # full: nothing taken
    assert storage.hit("k", 5, 60, amount=6) == (False, 1_000.0, 2, 1_020.0)  # never fits
    clock.now += 41  # the first entry leaves the window
    assert storage.hit("k", 2, 60) == (True, 1_010.0, 2, 1_061.0)


async def test_idle_keys_are_swept_inline_without_starting_threads(
    clock: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_window, "_SWEEP_EVERY_HITS", 2)
    storage = LocalWindowStorage()
    threads_before = threading.active_count()
    await storage.acquire_entry("quiet", 5, 60)
    clock.now += 61
    await storage.acquire_entry("busy", 5, 60)
    assert "quiet" not in storage._events
    assert await storage.get_moving_window("quiet", 5, 60) == (clock.now, 0)
    assert threading.active_count() == threads_before
