"""Audit records for tests that seed an audit trail directly (retention, chain, purge)."""

from __future__ import annotations

from datetime import UTC, datetime

from nexus.core.types import Action, AuditRecord, Channel, Outcome


def audit_record(request_id: str, time: datetime | None = None) -> AuditRecord:
    """A successful REST execute of "report" by key:alice, stamped `time` (now when None)."""
    return AuditRecord(
        time=datetime.now(UTC) if time is None else time,
        request_id=request_id,
        channel=Channel.API,
        principal_id="key:alice",
        workflow="report",
        action=Action.EXECUTE,
        outcome=Outcome.SUCCESS,
        error_code=None,
        duration_ms=1.0,
    )
