"""Null objects and the system clock: what the pipeline uses when nothing better is configured."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from nexus.core.types import CallRecord, Channel, Outcome


class SystemClock:
    """UTC wall time and the monotonic clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.perf_counter()


class NoopMeter:
    """A meter that records nothing (monitoring off)."""

    def observe_call(self, channel: Channel, workflow: str, outcome: Outcome, duration_s: float) -> None:
        return None

    def observe_workflow(self, workflow: str, duration_s: float) -> None:
        return None

    def observe_tenant_usage(self, tenant_id: str, resource: str, value: float) -> None:
        return None

    def forget_tenant(self, tenant_id: str) -> None:
        return None


class NoopCallObserver:
    """A call observer that records nothing (no monitoring backend)."""

    def observe(self, call: CallRecord) -> None:
        return None

    async def close(self) -> None:
        return None
