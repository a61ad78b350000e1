"""The memory `KeyStore` and `AuditSink` beyond the shared contract: their bounds and arguments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nexus.backends.memory import MemoryAuditSink, MemoryKeyStore
from nexus.core.types import Action, ApiKey, AuditRecord, Channel, Outcome

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def make_record(request_id: str, second: int) -> AuditRecord:
    return AuditRecord(
        time=T0 + timedelta(seconds=second),
        request_id=request_id,
        channel=Channel.API,
        principal_id="anonymous",
        workflow="hello",
        action=Action.EXECUTE,
        outcome=Outcome.SUCCESS,
        error_code=None,
        duration_ms=1.0,
    )


async def test_audit_sink_keeps_only_the_newest_max_records() -> None:
    sink = MemoryAuditSink(max_records=3)

    for second in range(5):
        await sink.record(make_record(f"r{second}", second))

    assert [record.request_id for record in await sink.query()] == ["r4", "r3", "r2"]


def test_audit_sink_rejects_a_bound_below_one() -> None:
    with pytest.raises(ValueError, match="max_records"):
        MemoryAuditSink(max_records=0)


async def test_key_store_returns_copies_unaffected_by_a_later_revocation() -> None:
    store = MemoryKeyStore()
    await store.add(ApiKey("k1", "name", "hash", frozenset({"reader"}), T0))
    before = await store.get("k1")

    await store.revoke("k1", T0)

    assert before is not None
    assert not before.is_revoked
    after = await store.get("k1")
    assert after is not None
    assert after.is_revoked


async def test_revoke_with_a_naive_time_is_rejected_even_for_an_unknown_key() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await MemoryKeyStore().revoke("nope", datetime(2025, 3, 1))
