"""A call's tenant as its workflow sees it: `TenantContext`, where its data lives, and its storage gate.

The pipeline builds one `TenantContext` per tenant-scoped call and runs the workflow with
`run_context(ctx)`; nodes read it from the runtime context, never from inputs. Imports only the
standard library, core and errors.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

from nexus.core.ports import Clock
from nexus.core.tenancy.model import IsolationLevel, Resource, Tenant
from nexus.errors import ConfigurationError, DependencyUnavailableError, QuotaExceededError

log = logging.getLogger("nexus.tenancy.storage")
MIB = 1024 * 1024
# PostgreSQL names: lowercase so that quoting them changes nothing, at most 63 bytes.
_PG_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_KEYS = ("tenant_id", "name", "config", "isolation_level")


@dataclass(frozen=True, slots=True)
class TenantPlacement:
    """Where a tenant's data lives: under strict isolation its own role and schema (and maybe database)."""

    isolation: IsolationLevel
    schema: str | None = None
    """The tenant's own schema (strict only); its statements run with it as the search path."""
    role: str | None = None
    """The role its statements run as (strict only), so the database refuses other tenants' data."""
    database: str | None = None
    """The tenant's own database (strict with per-tenant databases), else None."""

    def __post_init__(self) -> None:
        if not isinstance(self.isolation, IsolationLevel):
            raise ConfigurationError(f"isolation must be an IsolationLevel, not {self.isolation!r}.")
        for what in ("schema", "role", "database"):
            value = getattr(self, what)
            if value is not None and (not isinstance(value, str) or _PG_NAME.fullmatch(value) is None):
                raise ConfigurationError(f"A placement's {what} must be a lowercase PostgreSQL name.")
        if self.isolation is IsolationLevel.STRICT and (self.schema is None or self.role is None):
            raise ConfigurationError("A strict placement names the tenant's schema and role.")
        if self.isolation is not IsolationLevel.STRICT and (self.schema or self.role or self.database):
            raise ConfigurationError(
                f"Under {self.isolation.value} isolation tenants share the schema: no schema, role "
                "or database of their own."
            )


class TenantContext(Mapping[str, Any]):
    """The caller's tenant, read-only: `tenant_id`, `name`, `config` (its set keys) and `isolation_level`.

    Attributes beside the keys: `placement`, `storage` (None when no storage quota applies) and the
    nodes that touched the tenant's data (`note_access`, `accesses`) for the call's audit record.
    """

    __slots__ = ("_accesses", "_config", "_items", "placement", "storage")
    placement: TenantPlacement
    storage: StorageGate | None
    _items: Mapping[str, Any]
    _config: Mapping[str, Any]
    _accesses: dict[str, None]

    def __init__(
        self, tenant: Tenant, placement: TenantPlacement, *, storage: StorageGate | None = None
    ) -> None:
        if not isinstance(placement, TenantPlacement):
            raise ConfigurationError("placement must be a TenantPlacement.")
        config = MappingProxyType(tenant.config.to_mapping())
        items = {
            "tenant_id": tenant.tenant_id,
            "name": tenant.name,
            "config": config,
            "isolation_level": placement.isolation,
        }
        setattr_ = object.__setattr__
        setattr_(self, "_items", MappingProxyType(items))
        setattr_(self, "_config", config)
        setattr_(self, "placement", placement)
        setattr_(self, "storage", storage)
        setattr_(self, "_accesses", {})

    def __getitem__(self, key: str) -> Any:
        if key == "config":
            return dict(self._config)  # a copy: code that edits it changes nothing here
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(_KEYS)

    def __len__(self) -> int:
        return len(_KEYS)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"TenantContext is read-only (cannot set {name!r})")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"TenantContext is read-only (cannot delete {name!r})")

    def __repr__(self) -> str:
        return f"TenantContext(tenant_id={self._items['tenant_id']!r}, isolation={self.placement.isolation})"

    def note_access(self, node_id: str) -> None:
        """Record that node `node_id` reached the tenant's data (each node once, in order)."""
        if not isinstance(node_id, str) or not node_id:
            raise ValueError("note_access needs the id of the node")
        self._accesses.setdefault(node_id, None)

    @property
    def accesses(self) -> tuple[str, ...]:
        """The nodes that reached the tenant's data so far, in the order they first did."""
        return tuple(self._accesses)


def run_context(ctx: TenantContext) -> Mapping[str, Any]:
    """The runtime context of a tenant-scoped run: what nodes and `${tenant_id}` templates read."""
    return MappingProxyType({"tenant_context": ctx, "tenant_id": ctx["tenant_id"]})


def tenant_context_of(context: Mapping[str, Any]) -> TenantContext | None:
    """The run's `TenantContext`, or None when the run is not tenant-scoped."""
    found = context.get("tenant_context")
    return found if isinstance(found, TenantContext) else None


class StorageGate:
    """Refuses a tenant's writes once its measured data size is at or over its `storage_mb` limit.

    The size is measured at most once per `refresh_s` and one measurement at a time. A stale size
    under the limit lets the write through and refreshes in the background; a stale size over it
    is measured again before refusing, so a tenant that freed space is not refused on old figures.
    Until a first measurement succeeds, writes are refused (fail closed).
    """

    def __init__(
        self,
        tenant_id: str,
        limit_mb: int,
        measure: Callable[[], Awaitable[int]],
        clock: Clock,
        *,
        refresh_s: float = 30.0,
    ) -> None:
        if not isinstance(limit_mb, int) or isinstance(limit_mb, bool) or limit_mb < 1:
            raise ConfigurationError(f"storage_mb must be a positive whole number, got {limit_mb!r}.")
        if isinstance(refresh_s, bool) or not isinstance(refresh_s, int | float) or refresh_s <= 0:
            raise ConfigurationError(f"refresh_s must be a positive number of seconds, got {refresh_s!r}.")
        self.tenant_id = tenant_id
        self.limit_mb = limit_mb
        self._measure = measure
        self._clock = clock
        self._refresh_s = float(refresh_s)
        self._used: int | None = None
        self._attempted_at: float | None = None
        self._measuring: asyncio.Task[None] | None = None

    @property
    def limit_bytes(self) -> int:
        return self.limit_mb * MIB

    @property
    def used_bytes(self) -> int | None:
        """The last measured size (for the usage metric); None before a first measurement."""
        return self._used

    async def check_write(self) -> None:
        """Return when the tenant may write; raise when it may not.

        Raises:
            QuotaExceededError: the measured size is at or over the limit (`resource="storage_mb"`).
            DependencyUnavailableError: the size has never been measured successfully.
        """
        if self._is_stale():
            refreshing = self._refresh()
            if self._used is None or self._used >= self.limit_bytes:
                # Shielded: a caller that gives up must not cancel the measurement others wait for.
                await asyncio.shield(refreshing)
        used = self._used
        if used is None:
            raise DependencyUnavailableError(
                f"The storage used by tenant {self.tenant_id!r} cannot be measured; writes are "
                "refused until it can."
            )
        if used >= self.limit_bytes:
            retry_after = max(1, math.ceil(self._next_measurement_in()))
            raise QuotaExceededError(
                f"Tenant {self.tenant_id!r} is at its storage_mb quota of {self.limit_mb} "
                f"({used / MIB:.1f} MB in use); writes are refused, reads still work. Retry in "
                f"{retry_after} s.",
                retry_after=retry_after,
                resource=Resource.STORAGE_MB.value,
            )

    async def close(self) -> None:
        """Stop a measurement in progress (before the event loop that runs it ends)."""
        task = self._measuring
        if task is not None:
            task.cancel()
            await asyncio.wait({task})

    def _is_stale(self) -> bool:
        attempted = self._attempted_at
        return attempted is None or self._clock.monotonic() - attempted >= self._refresh_s

    def _next_measurement_in(self) -> float:
        attempted = self._attempted_at
        if attempted is None:
            return self._refresh_s
        return self._refresh_s - (self._clock.monotonic() - attempted)

    def _refresh(self) -> asyncio.Task[None]:
        task = self._measuring
        if task is None:
            task = asyncio.get_running_loop().create_task(self._measure_once())
            self._measuring = task
        return task

    async def _measure_once(self) -> None:
        try:
            used = await self._measure()
            if isinstance(used, bool) or not isinstance(used, int) or used < 0:
                raise TypeError(f"a size in bytes was expected, got {type(used).__name__}")
            self._used = used
        except Exception:  # the last size stands (or writes stay refused); retried after refresh_s
            log.warning(
                "could not measure a tenant's storage", extra={"tenant_id": self.tenant_id}, exc_info=True
            )
        finally:
            self._attempted_at = self._clock.monotonic()
            self._measuring = None
