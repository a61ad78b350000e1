"""A tenant's `cli_sessions` quota as the identity side sees it: seats for live CLI sessions.

A login for the CLI on a tenant's route takes a seat (refused when the tenant has none free), and
so does any session the first time it is used on the CLI (a login made for another channel whose
session mints a CLI token is a CLI session too); every CLI call keeps it, logout gives it back.
A seat is a lease of `SEAT_TTL_S`: a session ended any other way (revoked, expired) or left idle
frees its seat within that time, and takes one again when it is used. Renewals go to the store
at most every third of the lease per session. Imports only core and errors.
"""

from __future__ import annotations

from collections.abc import Callable

from nexus.core.auth.model import Session
from nexus.core.ports import Clock
from nexus.core.tenancy.model import Tenant
from nexus.core.tenancy.quota import TenantQuotas
from nexus.core.types import Channel

SEAT_TTL_S = 900.0
_MAX_TRACKED = 100_000


class CliSessionSeats:
    """`SessionSeats` for sessions opened for the CLI in a tenant (others are not counted)."""

    def __init__(
        self,
        quotas: TenantQuotas,
        tenant_of: Callable[[str], Tenant | None],
        clock: Clock,
        *,
        ttl_s: float = SEAT_TTL_S,
    ) -> None:
        self._quotas = quotas
        self._tenant_of = tenant_of
        self._clock = clock
        self._ttl_s = ttl_s
        self._renewed: dict[str, float] = {}  # session id -> when its seat was last renewed here

    def _counted(self, session: Session, channel: Channel) -> Tenant | None:
        if channel is not Channel.CLI or session.tenant_id is None:
            return None
        return self._tenant_of(session.tenant_id)

    async def take(self, session: Session) -> None:
        tenant = self._counted(session, session.origin_channel)
        if tenant is not None:
            await self._quotas.open_cli_session(tenant, session.session_id, ttl_s=self._ttl_s)
            self._note(session.session_id)

    async def keep(self, session: Session, channel: Channel) -> None:
        tenant = self._counted(session, channel)
        if tenant is None:
            return
        renewed = self._renewed.get(session.session_id)
        if renewed is not None and self._clock.monotonic() - renewed < self._ttl_s / 3:
            return
        await self._quotas.keep_cli_session(tenant, session.session_id, ttl_s=self._ttl_s)
        self._note(session.session_id)

    async def release(self, session: Session) -> None:
        self._renewed.pop(session.session_id, None)
        if session.tenant_id is not None:  # it may hold a seat whatever channel it began on
            await self._quotas.close_cli_session(session.tenant_id, session.session_id)

    def _note(self, session_id: str) -> None:
        if len(self._renewed) >= _MAX_TRACKED:
            self._renewed.clear()  # only costs an early renewal each
        self._renewed[session_id] = self._clock.monotonic()
