"""Null objects and the system clock: what the pipeline uses when nothing better is configured."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from nexus.core.types import CallRecord, Channel, Outcome

UNVERIFIED = "unverified"
"""How telemetry names the account a failed login step tried: never by what the caller typed."""


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


def shown_principal(call: CallRecord, conceal: Callable[[str], str]) -> str:
    """The caller as telemetry (call logs, spans) may name it: "anonymous" as is; the account a
    failed login step tried, never (its id holds what the caller typed as a username, sometimes a
    password in the wrong field: the audit record keeps it); anyone else through `conceal`."""
    principal = call.invocation.principal
    if principal.is_anonymous:
        return principal.id
    if principal.kind == "login" and call.outcome is not Outcome.SUCCESS:
        return UNVERIFIED
    return conceal(principal.id)
