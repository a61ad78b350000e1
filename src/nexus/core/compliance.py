"""Compliance modes: the frameworks each names, what each requires of the other settings, and the
audit retention that carries out their record-keeping rules.

Pure rules, plus the schedule that purges expired audit records through the `AuditSink` port.
Imports only the standard library, core and errors.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final

from nexus.core.auth.policy import ALL_CHANNELS, MfaPolicy
from nexus.core.ports import AuditSink, Clock
from nexus.errors import ConfigurationError, NexusError

_log = logging.getLogger(__name__)


class Framework(enum.StrEnum):
    """A regulation a compliance mode follows."""

    GDPR = "gdpr"
    HIPAA = "hipaa"
    SOX = "sox"


MODES: Final[Mapping[str, frozenset[Framework]]] = MappingProxyType(
    {
        "gdpr": frozenset({Framework.GDPR}),
        "hipaa": frozenset({Framework.HIPAA}),
        "sox": frozenset({Framework.SOX}),
        "enterprise": frozenset(Framework),
    }
)
"""`app.auth.compliance_mode` values and the frameworks each follows."""

RETENTION_FLOOR_DAYS: Final[Mapping[Framework, int]] = MappingProxyType(
    {Framework.SOX: 2557, Framework.HIPAA: 2192}
)
"""Fewest days a framework keeps audit records (GDPR sets none): whole calendar years, so each
counts the most leap days such a span can hold (7 years: 2557 days, 6 years: 2192)."""

_FLOOR_SOURCE: Final = MappingProxyType(
    {Framework.SOX: "7 years, SOX section 802", Framework.HIPAA: "6 years, 45 CFR 164.316(b)(2)"}
)

PURGE_INTERVAL_S: Final = 3600.0
"""How often a serving app purges expired audit records (after once at start)."""


def frameworks_of(mode: str | None) -> frozenset[Framework]:
    """The frameworks `mode` follows (none for None).

    Raises:
        ConfigurationError: `mode` is not one of `MODES`.
    """
    if mode is None:
        return frozenset()
    frameworks = MODES.get(mode) if isinstance(mode, str) else None
    if frameworks is None:
        names = ", ".join(repr(name) for name in MODES)
        raise ConfigurationError(f"app.auth.compliance_mode must be one of {names} or None, got {mode!r}.")
    return frameworks


def includes(mode: str | None, framework: Framework) -> bool:
    """True when compliance mode `mode` follows `framework` (e.g. "enterprise" includes GDPR)."""
    return framework in frameworks_of(mode)


@dataclass(frozen=True, slots=True)
class CompliancePolicy:
    """The compliance rules in force; the default follows no framework and keeps records forever."""

    mode: str | None = None
    frameworks: frozenset[Framework] = frozenset()
    retention_days: int | None = None
    """Days audit records are kept; None: forever."""

    def includes(self, framework: Framework) -> bool:
        return framework in self.frameworks

    @property
    def requires_authentication(self) -> bool:
        """Every audit record must name an authenticated principal."""
        return bool(self.frameworks)

    @property
    def requires_mfa(self) -> bool:
        """A second factor on every channel (the 2025 HIPAA Security Rule update)."""
        return Framework.HIPAA in self.frameworks

    @property
    def retention(self) -> timedelta | None:
        return None if self.retention_days is None else timedelta(days=self.retention_days)


def compliance_policy(mode: str | None, retention_days: int | None) -> CompliancePolicy:
    """The policy for `app.auth.compliance_mode` and `app.auth.audit_log_retention`: without a
    retention, a mode's floor applies; a shorter one than its floor is refused.

    Raises:
        ConfigurationError: an unknown mode, a retention that is not a positive whole number of
            days, or one below the mode's floor.
    """
    frameworks = frameworks_of(mode)
    if retention_days is not None and (
        not isinstance(retention_days, int) or isinstance(retention_days, bool) or retention_days < 1
    ):
        raise ConfigurationError(
            "app.auth.audit_log_retention must be a positive whole number of days (2557 is 7 years) "
            f"or None to keep audit records forever, got {retention_days!r}."
        )
    floors = {f: RETENTION_FLOOR_DAYS[f] for f in frameworks if f in RETENTION_FLOOR_DAYS}
    if not floors:
        return CompliancePolicy(mode, frameworks, retention_days)
    strictest = max(floors, key=floors.__getitem__)
    floor = floors[strictest]
    if retention_days is not None and retention_days < floor:
        raise ConfigurationError(
            f"app.auth.audit_log_retention is {retention_days} days, but compliance_mode {mode!r} "
            f"keeps audit records at least {floor} days ({_FLOOR_SOURCE[strictest]}): set it to "
            f"{floor} or more, or leave it unset to keep them {floor} days."
        )
    return CompliancePolicy(mode, frameworks, floor if retention_days is None else retention_days)


def check_requirements(policy: CompliancePolicy, *, enable_auth: bool, mfa: MfaPolicy) -> None:
    """Refuse settings the policy's frameworks forbid; `mfa` is the second-factor policy in force.

    Raises:
        ConfigurationError: naming the setting and the fix.
    """
    if policy.requires_authentication and not enable_auth:
        raise ConfigurationError(
            f"app.auth.compliance_mode {policy.mode!r} needs enable_auth=True: every audit record "
            "must name an authenticated principal. Pass enable_auth=True to Nexus(...), or leave "
            "compliance_mode unset."
        )
    if not policy.requires_mfa:
        return
    missing = ALL_CHANNELS - mfa.required_for if mfa.methods else ALL_CHANNELS
    if missing:
        channels = ", ".join(sorted(channel.value for channel in missing))
        raise ConfigurationError(
            f"app.auth.compliance_mode {policy.mode!r} requires a second factor on every channel "
            f"(the HIPAA Security Rule requires MFA), but none is required on: {channels}. Set "
            "app.auth.provider = EnterpriseAuthProvider(..., enable_mfa=True), or app.auth.mfa = "
            "MultiFactorAuth(required_for=['api', 'cli', 'mcp'])."
        )
    if mfa.bypass_roles:
        roles = ", ".join(sorted(mfa.bypass_roles))
        raise ConfigurationError(
            f"app.auth.compliance_mode {policy.mode!r} requires a second factor of everyone, but "
            f"MultiFactorAuth.bypass_roles exempts {roles}: leave bypass_roles empty (automated "
            "callers use API keys)."
        )


class AuditRetention:
    """Deletes audit records older than the retention through the sink, on demand or on a schedule.

    Nothing younger than the retention is ever deleted; several nodes may purge at once.
    """

    def __init__(
        self,
        sink: AuditSink,
        clock: Clock,
        days: int,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if days < 1:
            raise ValueError("days must be at least 1")
        self._sink = sink
        self._clock = clock
        self._days = days
        self._sleep = sleep

    def cutoff(self) -> datetime:
        """Records stamped before this instant have outlived the retention."""
        return self._clock.now() - timedelta(days=self._days)

    async def purge(self) -> int:
        """Delete the expired records now; how many went."""
        return await self._sink.purge(self.cutoff())

    async def keep_purging(self, interval_s: float = PURGE_INTERVAL_S) -> None:
        """Purge now and then every `interval_s` until cancelled; a failed round is logged and
        the next one tries again."""
        while True:
            try:
                removed = await self.purge()
            except NexusError as exc:
                _log.warning(
                    "audit retention: purge failed (%s); next try in %.0f s", exc.message, interval_s
                )
            except Exception:  # noqa: BLE001  # logged with its traceback; retention must outlive one bad round
                _log.exception("audit retention: purge failed; next try in %.0f s", interval_s)
            else:
                if removed:
                    _log.info("audit retention: purged %d records older than %d days", removed, self._days)
            await self._sleep(interval_s)
