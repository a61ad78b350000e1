"""`AuditSink` on the SQL state database, with group commit.

Concurrent `record` calls queue their records; one writer commits everything queued in a single
transaction and then wakes every caller, so a busy node pays one fsync per batch, not per call.
The writer is a task on the event loop, or for a SQLite file an appender process of its own; it
also extends the hash chain. `purge` deletes the chain's oldest links and keeps an anchor, so what
is left still verifies; `verify` walks the chain in one consistent snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from nexus.backends.sql.batch_writer import AsyncBatchWriter, BatchWriter, SqliteAppender, is_sqlite_file
from nexus.backends.sql.engine import SQLITE_WRITE_LOCK, STORE_ERRORS, reading, unavailable
from nexus.backends.sql.schema import CHAIN_ROW, audit_chain, audit_records, require_aware
from nexus.core.audit_chain import (
    FIELDS,
    GENESIS_HASH,
    AuditVerification,
    ChainLink,
    ChainState,
    ChainVerifier,
    purgeable,
)
from nexus.core.types import Action, AuditRecord, Channel, Outcome
from nexus.errors import AuditIntegrityError, DependencyUnavailableError

DEFAULT_MAX_BATCH: Final = 512
_NOT_RECORDED: Final = "The audit trail is unavailable; the call was not recorded."
# Records deleted per purge transaction (short, so writers waiting on the chain's row wait little)
# and read per page while verifying.
_PURGE_CHUNK: Final = 1000
_VERIFY_PAGE: Final = 2000
# Purges on several nodes take turns on this PostgreSQL advisory lock (any fixed number works).
_PG_PURGE_LOCK: Final = zlib.crc32(b"nexus.backends.sql.audit_sink.purge")

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuditSinkStats:
    """Counts since the sink was created; `batches_committed < records_committed` shows grouping."""

    records_committed: int = 0
    batches_committed: int = 0
    batches_failed: int = 0


@dataclass(frozen=True, slots=True)
class _Pending:
    row: dict[str, Any]
    done: asyncio.Future[None]


class SqlAuditSink:
    """Durable audit trail; `record` returns once the transaction holding the record has committed.

    The writer task starts on the event loop of the first `record` (or `start`) and stays bound to it.
    """

    def __init__(self, engine: AsyncEngine, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._engine = engine
        self._purger = engine.execution_options(**SQLITE_WRITE_LOCK)
        self._writer_path: BatchWriter = AsyncBatchWriter(engine)
        # A SQLite file is group-committed by an appender process of its own (see SqliteAppender).
        self._lane = SqliteAppender(engine, max_batch=max_batch) if is_sqlite_file(engine) else None
        self._max_batch = max_batch
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._stats = AuditSinkStats()

    @property
    def stats(self) -> AuditSinkStats:
        lane = self._lane
        if lane is not None:
            return AuditSinkStats(lane.records_committed, lane.batches_committed, lane.batches_failed)
        return self._stats

    async def start(self) -> None:
        """Start the writer on the running loop now rather than at the first record."""
        self._writer_wakeup()

    async def record(self, record: AuditRecord) -> None:
        """Queue `record` and wait until the batch holding it is committed.

        Raises:
            DependencyUnavailableError: the batch could not be committed, or the sink is closed.
        """
        if self._closed:
            raise DependencyUnavailableError("The audit trail is closed; the call was not recorded.")
        row = _to_row(record)
        if self._lane is not None:
            try:
                await self._lane.commit(row)
            except Exception as exc:  # logged by the writer; callers learn only this
                raise unavailable(_NOT_RECORDED, exc) from exc
            return
        wakeup = self._writer_wakeup()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(row, done))
        wakeup.set()
        await done

    async def query(
        self,
        *,
        workflow: str | None = None,
        principal_id: str | None = None,
        tenant_id: str | None = None,
        limit: int = 100,
    ) -> Sequence[AuditRecord]:
        """Newest first; `tenant_id` keeps that tenant's records only (never the platform's)."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        statement = select(audit_records).order_by(audit_records.c.time.desc(), audit_records.c.id.desc())
        if workflow is not None:
            statement = statement.where(audit_records.c.workflow == workflow)
        if principal_id is not None:
            statement = statement.where(audit_records.c.principal_id == principal_id)
        if tenant_id is not None:
            statement = statement.where(audit_records.c.tenant_id == tenant_id)
        async with reading(self._engine) as connection:
            rows = (await connection.execute(statement.limit(limit))).mappings().all()
        return [_to_record(row) for row in rows]

    async def purge(self, before: datetime) -> int:
        """Delete the chain's leading records stamped before `before`, a chunk per transaction;
        how many went. A record outside the chain is never deleted: verification reports it.

        Raises:
            AuditIntegrityError: the chain is broken among the records to delete (none of those are).
            DependencyUnavailableError: the database failed (chunks already committed stay deleted).
        """
        cutoff = require_aware(before, "before")
        removed = 0
        while True:
            try:
                async with self._purger.begin() as connection:
                    count, more = await _purge_chunk(connection, cutoff)
            except STORE_ERRORS as exc:
                raise unavailable("The audit trail is unavailable; the purge stopped.", exc) from exc
            removed += count
            if not more:
                return removed

    async def verify(self) -> AuditVerification:
        """Recompute the chain from its anchor, in one snapshot (records written meanwhile wait for
        the next verification)."""
        try:
            async with self._engine.connect() as connection:
                if connection.dialect.name == "postgresql":
                    await connection.execution_options(isolation_level="REPEATABLE READ")
                async with connection.begin():
                    return await _verify_on(connection)
        except STORE_ERRORS as exc:
            raise unavailable("The audit trail is unavailable.", exc) from exc

    async def close(self) -> None:
        """Commit what is pending, then stop the writer; later `record` calls raise."""
        self._closed = True
        try:
            if self._writer is not None and self._wakeup is not None and not self._writer.done():
                self._wakeup.set()
                await asyncio.shield(self._writer)
        finally:
            await self._writer_path.close()
            if self._lane is not None:
                await self._lane.close()

    def _writer_wakeup(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._writer is None or self._wakeup is None or self._writer.done():
            # A writer that ended on a bug or a cancellation is replaced; records keep flowing.
            self._wakeup = asyncio.Event()
            self._writer = loop.create_task(self._write_until_closed(self._wakeup), name="nexus-audit-writer")
        elif self._writer.get_loop() is not loop:
            raise RuntimeError("SqlAuditSink is bound to the event loop that first used it")
        return self._wakeup

    async def _write_until_closed(self, wakeup: asyncio.Event) -> None:
        try:
            while True:
                await wakeup.wait()
                wakeup.clear()
                while self._queue:
                    await self._commit(self._take_batch())
                if self._closed:
                    return
        finally:
            # Reached early only when the task is cancelled or hits a bug: no caller may wait forever.
            for pending in self._take_batch(len(self._queue)):
                _settle(pending, DependencyUnavailableError(_NOT_RECORDED))

    def _take_batch(self, size: int | None = None) -> list[_Pending]:
        count = min(len(self._queue), self._max_batch if size is None else size)
        return [self._queue.popleft() for _ in range(count)]

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            await self._writer_path.write([pending.row for pending in batch])
        except STORE_ERRORS as exc:
            # Every waiter learns its record is not durable; the writer lives on for later batches.
            _log.exception("audit batch of %d records failed to commit", len(batch))
            self._stats = _add_to_stats(self._stats, failed=1)
            _fail_all(batch, exc)
            return
        except BaseException as exc:
            # A bug or a cancellation ends the writer, but the callers of this batch must not wait forever.
            _fail_all(batch, exc)
            raise
        self._stats = _add_to_stats(self._stats, committed=1, records=len(batch))
        for pending in batch:
            _settle(pending, None)


async def _chain_state(connection: AsyncConnection) -> ChainState | None:
    """The chain's anchor and tail (None when its row is missing)."""
    row = (await connection.execute(select(audit_chain).where(audit_chain.c.id == CHAIN_ROW))).one_or_none()
    if row is None:
        return None
    return ChainState(row.anchor_seq, row.anchor_hash, row.tail_seq, row.tail_hash)


def _link(row: Any) -> ChainLink:
    return ChainLink(row.seq, row.prev_hash, row.hash, tuple(getattr(row, name) for name in FIELDS))


async def _purge_chunk(connection: AsyncConnection, cutoff: datetime) -> tuple[int, bool]:
    """Delete up to one chunk of the chain's expired leading records; (count, more may remain)."""
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_PURGE_LOCK})
    state = await _chain_state(connection)
    if state is None:
        raise AuditIntegrityError("The audit trail's chain row (audit_chain) is missing; nothing was purged.")
    seq = audit_records.c.seq
    rows = (
        await connection.execute(
            select(audit_records).where(seq > state.anchor_seq).order_by(seq).limit(_PURGE_CHUNK)
        )
    ).all()
    links = [_link(row) for row in rows]
    count = purgeable(links, cutoff)
    if count:
        verifier = ChainVerifier(state)
        if not all(verifier.feed(link) for link in links[:count]):
            message = f"The audit trail is broken, so nothing more was purged: {verifier.reason}."
            raise AuditIntegrityError(message)
        last = links[count - 1]
        await connection.execute(delete(audit_records).where(seq > state.anchor_seq, seq <= last.seq))
        await connection.execute(
            update(audit_chain)
            .where(audit_chain.c.id == CHAIN_ROW)
            .values(anchor_seq=last.seq, anchor_hash=last.hash)
        )
    return count, count == _PURGE_CHUNK


async def _verify_on(connection: AsyncConnection) -> AuditVerification:
    state = await _chain_state(connection)
    if state is None:
        return AuditVerification(
            intact=False,
            checked=0,
            first_seq=1,
            last_seq=0,
            head_hash=GENESIS_HASH,
            reason="the chain's row (audit_chain) is missing",
        )
    seq, record_id = audit_records.c.seq, audit_records.c.id
    # Every record a writer stores is chained: one without a sequence number is outside the chain.
    outside = (await connection.execute(select(func.count(), func.min(record_id)).where(seq.is_(None)))).one()
    verifier = ChainVerifier(state)
    after: int | None = None
    while True:
        page = select(audit_records).where(seq.is_not(None)).order_by(seq).limit(_VERIFY_PAGE)
        rows = (await connection.execute(page if after is None else page.where(seq > after))).all()
        if not all(verifier.feed(_link(row)) for row in rows) or len(rows) < _VERIFY_PAGE:
            return verifier.finish(unchained=int(outside[0]), first_unchained_id=outside[1])
        after = rows[-1].seq


def _fail_all(batch: list[_Pending], cause: BaseException) -> None:
    for pending in batch:
        _settle(pending, unavailable(_NOT_RECORDED, cause))


def _settle(pending: _Pending, error: BaseException | None) -> None:
    # A caller that was cancelled has a done future; its record is still committed, or not, with the rest.
    if pending.done.done():
        return
    if error is None:
        pending.done.set_result(None)
    else:
        pending.done.set_exception(error)


def _add_to_stats(
    stats: AuditSinkStats, *, committed: int = 0, records: int = 0, failed: int = 0
) -> AuditSinkStats:
    return AuditSinkStats(
        records_committed=stats.records_committed + records,
        batches_committed=stats.batches_committed + committed,
        batches_failed=stats.batches_failed + failed,
    )


def _to_row(record: AuditRecord) -> dict[str, Any]:
    return {
        "time": require_aware(record.time, "AuditRecord.time"),
        "request_id": record.request_id,
        "channel": record.channel.value,
        "principal_id": record.principal_id,
        "workflow": record.workflow,
        "action": str(record.action),
        "outcome": record.outcome.value,
        "error_code": record.error_code,
        "duration_ms": record.duration_ms,
        "client_addr": record.client_addr,
        "reason": record.reason,
        "tenant_id": record.tenant_id,
    }


def _action(stored: str) -> Action | str:
    """Custom surfaces have action words of their own (e.g. "explain"); those stay strings."""
    try:
        return Action(stored)
    except ValueError:
        return stored


def _to_record(row: Any) -> AuditRecord:
    return AuditRecord(
        time=row["time"],
        request_id=row["request_id"],
        channel=Channel(row["channel"]),
        principal_id=row["principal_id"],
        workflow=row["workflow"],
        action=_action(row["action"]),
        outcome=Outcome(row["outcome"]),
        error_code=row["error_code"],
        duration_ms=row["duration_ms"],
        client_addr=row["client_addr"],
        reason=row["reason"],
        tenant_id=row["tenant_id"],
    )
