"""In-process `KeyStore` and `AuditSink`: the embedded defaults for tests and single-process demos.

Same semantics as the SQL stores, nothing survives the process. Imports only core types and errors.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final

from nexus.core.types import ApiKey, AuditRecord
from nexus.errors import DependencyUnavailableError, InvalidInputError

DEFAULT_MAX_AUDIT_RECORDS: Final = 10_000


def _as_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


class MemoryKeyStore:
    """API keys in a dict; operations never await, so each is atomic on its loop."""

    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}

    async def add(self, key: ApiKey) -> None:
        """Store a new key.

        Raises:
            InvalidInputError: a key with this id already exists.
        """
        if key.key_id in self._keys:
            raise InvalidInputError(f"An API key with id {key.key_id!r} already exists.")
        revoked_at = None if key.revoked_at is None else _as_utc(key.revoked_at, "revoked_at")
        self._keys[key.key_id] = replace(
            key, created_at=_as_utc(key.created_at, "created_at"), revoked_at=revoked_at
        )

    async def get(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    async def list(self) -> Sequence[ApiKey]:
        """Every key, oldest first."""
        return sorted(self._keys.values(), key=lambda key: (key.created_at, key.key_id))

    async def revoke(self, key_id: str, at: datetime) -> bool:
        """Mark the key revoked at `at`; an earlier revocation time is kept. False if no such key."""
        revoked_at = _as_utc(at, "at")
        key = self._keys.get(key_id)
        if key is None:
            return False
        if key.revoked_at is None:
            self._keys[key_id] = replace(key, revoked_at=revoked_at)
        return True


class MemoryAuditSink:
    """The newest `max_records` audit records; older ones are dropped first."""

    def __init__(self, *, max_records: int = DEFAULT_MAX_AUDIT_RECORDS) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self._records: deque[AuditRecord] = deque(maxlen=max_records)
        self._closed = False

    async def record(self, record: AuditRecord) -> None:
        if self._closed:
            raise DependencyUnavailableError("The audit trail is closed; the call was not recorded.")
        self._records.append(replace(record, time=_as_utc(record.time, "AuditRecord.time")))

    async def query(
        self, *, workflow: str | None = None, principal_id: str | None = None, limit: int = 100
    ) -> Sequence[AuditRecord]:
        """Newest first; records with equal times come latest-recorded first, as in SQL."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        matches = [
            record
            for record in reversed(self._records)
            if (workflow is None or record.workflow == workflow)
            and (principal_id is None or record.principal_id == principal_id)
        ]
        # sorted() is stable, so ties keep the latest-recorded-first order built above.
        return sorted(matches, key=lambda record: record.time, reverse=True)[:limit]

    async def close(self) -> None:
        """Refuse later records; there is nothing pending to commit."""
        self._closed = True
