"""Turns the end of every call into one audit record and waits until it is durable."""

from __future__ import annotations

import re

from nexus.core.ports import AuditSink, Clock
from nexus.core.types import AuditRecord, Invocation, Outcome

_MAX_NAME = 128
_MAX_TEXT = 512
# Caller-supplied text (workflow names from URLs, request ids) reaches the store: control
# characters are replaced, since one NUL byte makes PostgreSQL refuse a whole group-commit batch.
# Lone surrogates (which no database encoding accepts) go the same way.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def _clean(text: str, limit: int) -> str:
    text = text[:limit]
    # Printable text (the usual case, checked in C) holds none of those characters.
    return text if text.isprintable() else _CONTROL.sub("\ufffd", text)


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
                request_id=_clean(invocation.request_id, _MAX_NAME),
                channel=invocation.channel,
                principal_id=_clean(invocation.principal.id, _MAX_NAME),
                workflow=_clean(invocation.workflow, _MAX_NAME),
                action=invocation.action,
                outcome=outcome,
                error_code=error_code,
                duration_ms=round(duration_s * 1000, 3),
                client_addr=_clean(invocation.client_addr, _MAX_NAME),
                reason=_clean(reason, _MAX_TEXT),
                tenant_id=None if invocation.tenant_id is None else _clean(invocation.tenant_id, _MAX_NAME),
            )
        )
