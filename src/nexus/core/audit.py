"""Turns the end of every call into one audit record and waits until it is durable."""

from __future__ import annotations

from nexus.core.ports import AuditSink, Clock
from nexus.core.types import AuditRecord, Invocation, Outcome

_MAX_NAME = 128


class Auditor:
    """Builds records (never with input values) and hands them to the sink."""

    def __init__(self, sink: AuditSink, clock: Clock) -> None:
        self._sink = sink
        self._clock = clock

    async def record(
        self, invocation: Invocation, outcome: Outcome, error_code: str | None, duration_s: float, reason: str
    ) -> None:
        await self._sink.record(
            AuditRecord(
                time=self._clock.now(),
                request_id=invocation.request_id,
                channel=invocation.channel,
                principal_id=invocation.principal.id,
                workflow=invocation.workflow[:_MAX_NAME],
                action=invocation.action,
                outcome=outcome,
                error_code=error_code,
                duration_ms=round(duration_s * 1000, 3),
                client_addr=invocation.client_addr,
                reason=reason,
            )
        )
