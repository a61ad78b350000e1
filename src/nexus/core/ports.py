"""The ports of the core: small Protocols that backends implement.

Each port has an in-memory implementation in `nexus.backends.memory`; cluster implementations
live beside it. Operations are atomic at the port. Imports only the standard library and core types.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from nexus.core.audit_chain import AuditVerification
from nexus.core.types import ApiKey, AuditRecord, CallRecord, Channel, Outcome, Usage


class Clock(Protocol):
    """Wall time for records and monotonic time for durations; tests use a fake one."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class CounterStore(Protocol):
    """Rate-limit counters shared by every channel (and every node, on Redis)."""

    async def hit(self, key: str, *, limit: int, window_s: int, cost: int = 1) -> Usage:
        """Count `cost` against `key` and say whether it stayed within `limit` per `window_s`."""
        ...

    async def clear(self, key: str) -> None: ...

    async def ping(self) -> None:
        """Raise `DependencyUnavailableError` when the counters cannot be reached."""
        ...

    async def close(self) -> None: ...


class AuditSink(Protocol):
    """Durable audit trail. `record` returns only once the record is committed."""

    async def record(self, record: AuditRecord) -> None: ...

    async def query(
        self,
        *,
        workflow: str | None = None,
        principal_id: str | None = None,
        tenant_id: str | None = None,
        limit: int = 100,
    ) -> Sequence[AuditRecord]:
        """Newest first; each filter given must match (`tenant_id`: that tenant's records only)."""
        ...

    async def purge(self, before: datetime) -> int:
        """Delete records stamped before `before`, oldest first and never past a younger one (so
        the hash chain stays whole from the anchor it keeps); how many went. Safe to run on
        several nodes at once.

        Raises:
            AuditIntegrityError: the chain is broken among the records to delete (none are).
        """
        ...

    async def verify(self) -> AuditVerification:
        """Recompute the hash chain from its anchor to its newest record."""
        ...

    async def close(self) -> None:
        """Commit what is pending, then stop."""
        ...


class KeyStore(Protocol):
    """API keys, stored by id with a hash of the secret."""

    async def add(self, key: ApiKey) -> None: ...

    async def get(self, key_id: str) -> ApiKey | None: ...

    async def list(self) -> Sequence[ApiKey]: ...

    async def revoke(self, key_id: str, at: datetime) -> bool:
        """Mark the key revoked; False if there is no such key."""
        ...


class Meter(Protocol):
    """Metrics sink; `NoopMeter` when monitoring is off."""

    def observe_call(self, channel: Channel, workflow: str, outcome: Outcome, duration_s: float) -> None: ...

    def observe_workflow(self, workflow: str, duration_s: float) -> None: ...

    def observe_tenant_usage(self, tenant_id: str, resource: str, value: float) -> None:
        """What a tenant uses now of a quota's resource (`resource` is a `tenancy.Resource` value)."""
        ...

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop a deleted tenant's series, so label values stay the live tenants."""
        ...


class CallObserver(Protocol):
    """Sees every finished pipeline call once (traces, structured call logs); `NoopCallObserver`
    when no monitoring backend asks for them."""

    def observe(self, call: CallRecord) -> None:
        """Record `call`; called on the event loop, so it only hands work off (no I/O here)."""
        ...

    async def close(self) -> None:
        """Flush what was handed off, then stop."""
        ...
