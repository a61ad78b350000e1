"""Compliance modes: their frameworks, retention floors and requirements, and the retention that
purges expired audit records (memory sink, fake clock, no sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.support.records import audit_record

from nexus.backends.memory import MemoryAuditSink
from nexus.core.auth.model import FactorKind
from nexus.core.auth.policy import ALL_CHANNELS, MfaPolicy
from nexus.core.compliance import (
    MODES,
    RETENTION_FLOOR_DAYS,
    AuditRetention,
    CompliancePolicy,
    Framework,
    check_requirements,
    compliance_policy,
    frameworks_of,
    includes,
)
from nexus.core.types import Channel
from nexus.errors import ConfigurationError, DependencyUnavailableError
from nexus.testing.clock import FakeClock

NOW = datetime(2032, 6, 1, 12, 0, tzinfo=UTC)
TOTP_EVERYWHERE = MfaPolicy(methods=frozenset({FactorKind.TOTP}), required_for=ALL_CHANNELS)


@pytest.mark.parametrize(
    ("mode", "gdpr", "hipaa", "sox"),
    [
        (None, False, False, False),
        ("gdpr", True, False, False),
        ("hipaa", False, True, False),
        ("sox", False, False, True),
        ("enterprise", True, True, True),
    ],
)
def test_each_mode_includes_its_frameworks(mode: str | None, gdpr: bool, hipaa: bool, sox: bool) -> None:
    assert includes(mode, Framework.GDPR) is gdpr
    assert includes(mode, Framework.HIPAA) is hipaa
    assert includes(mode, Framework.SOX) is sox
    assert compliance_policy(mode, None).includes(Framework.GDPR) is gdpr


@pytest.mark.parametrize("mode", ["GDPR", "pci", "", 1])
def test_an_unknown_mode_is_refused_naming_the_setting_and_the_valid_ones(mode: object) -> None:
    with pytest.raises(ConfigurationError, match=r"app\.auth\.compliance_mode must be one of 'gdpr'"):
        frameworks_of(mode)  # type: ignore[arg-type]


def test_the_floors_are_seven_years_for_sox_and_six_for_hipaa() -> None:
    assert RETENTION_FLOOR_DAYS == {Framework.SOX: 2557, Framework.HIPAA: 2192}
    assert set(MODES) == {"gdpr", "hipaa", "sox", "enterprise"}


@pytest.mark.parametrize(
    ("mode", "days"), [("sox", 2557), ("enterprise", 2557), ("hipaa", 2192), ("gdpr", None), (None, None)]
)
def test_a_mode_without_a_retention_keeps_records_for_its_floor(mode: str | None, days: int | None) -> None:
    policy = compliance_policy(mode, None)

    assert policy.retention_days == days
    assert policy.retention == (None if days is None else timedelta(days=days))


@pytest.mark.parametrize(("mode", "floor"), [("sox", 2557), ("enterprise", 2557), ("hipaa", 2192)])
def test_a_retention_below_the_floor_is_refused_with_the_floor_and_its_source(mode: str, floor: int) -> None:
    with pytest.raises(ConfigurationError) as caught:
        compliance_policy(mode, floor - 1)

    message = caught.value.message
    assert "app.auth.audit_log_retention" in message
    assert f"at least {floor} days" in message
    assert ("SOX section 802" if floor == 2557 else "45 CFR 164.316(b)(2)") in message
    assert compliance_policy(mode, floor).retention_days == floor
    assert compliance_policy(mode, floor + 365).retention_days == floor + 365


def test_gdpr_and_no_mode_take_any_positive_retention() -> None:
    assert compliance_policy("gdpr", 30).retention_days == 30
    assert compliance_policy(None, 1).retention_days == 1


@pytest.mark.parametrize("days", [0, -5, 2557.0, "2557", True])
def test_a_retention_that_is_not_a_positive_whole_number_of_days_is_refused(days: object) -> None:
    with pytest.raises(ConfigurationError, match="positive whole number of days"):
        compliance_policy("sox", days)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["gdpr", "hipaa", "sox", "enterprise"])
def test_every_mode_needs_authentication(mode: str) -> None:
    with pytest.raises(ConfigurationError, match="needs enable_auth=True: every audit record"):
        check_requirements(compliance_policy(mode, None), enable_auth=False, mfa=TOTP_EVERYWHERE)


def test_no_mode_needs_nothing() -> None:
    check_requirements(CompliancePolicy(), enable_auth=False, mfa=MfaPolicy())


@pytest.mark.parametrize("mode", ["gdpr", "sox"])
def test_modes_without_hipaa_need_no_second_factor(mode: str) -> None:
    check_requirements(compliance_policy(mode, None), enable_auth=True, mfa=MfaPolicy())


@pytest.mark.parametrize("mode", ["hipaa", "enterprise"])
def test_hipaa_needs_a_second_factor_on_every_channel(mode: str) -> None:
    policy = compliance_policy(mode, None)
    partial = MfaPolicy(methods=frozenset({FactorKind.TOTP}), required_for=frozenset({Channel.API}))

    with pytest.raises(ConfigurationError, match=r"none is required on: api, cli, mcp\. Set"):
        check_requirements(policy, enable_auth=True, mfa=MfaPolicy())
    with pytest.raises(ConfigurationError, match=r"none is required on: cli, mcp\."):
        check_requirements(policy, enable_auth=True, mfa=partial)
    check_requirements(policy, enable_auth=True, mfa=TOTP_EVERYWHERE)


def test_hipaa_refuses_roles_exempt_from_the_second_factor() -> None:
    exempt = MfaPolicy(
        methods=frozenset({FactorKind.TOTP}), required_for=ALL_CHANNELS, bypass_roles=frozenset({"system"})
    )

    with pytest.raises(ConfigurationError, match="bypass_roles exempts system"):
        check_requirements(compliance_policy("hipaa", None), enable_auth=True, mfa=exempt)


async def test_a_purge_deletes_only_records_older_than_the_retention() -> None:
    sink, clock = MemoryAuditSink(), FakeClock(NOW)
    retention = AuditRetention(sink, clock, 30)
    await sink.record(audit_record("expired", NOW - timedelta(days=30, seconds=1)))
    await sink.record(audit_record("at-the-cutoff", NOW - timedelta(days=30)))
    await sink.record(audit_record("young", NOW - timedelta(days=1)))

    removed = await retention.purge()

    assert removed == 1
    assert retention.cutoff() == NOW - timedelta(days=30)
    assert [r.request_id for r in await sink.query()] == ["young", "at-the-cutoff"]
    assert (await sink.verify()).intact


async def test_the_schedule_purges_at_once_then_after_every_interval() -> None:
    sink, clock = MemoryAuditSink(), FakeClock(NOW)
    await sink.record(audit_record("old", NOW - timedelta(days=2)))
    await sink.record(audit_record("new", NOW))
    slept: list[float] = []
    seen: list[list[str]] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        seen.append([r.request_id for r in await sink.query()])
        clock.advance(seconds)
        if len(slept) == 26:
            raise _Stop

    retention = AuditRetention(sink, clock, 1, sleep=sleep)
    with pytest.raises(_Stop):
        await retention.keep_purging(interval_s=3600)

    assert slept == [3600] * 26
    assert seen[0] == ["new"]  # the round at start went before the first sleep
    assert seen[24] == ["new"]  # the round 24 hours on: "new" is exactly one day old, so kept
    assert seen[25] == []


async def test_a_failing_round_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    failures = [DependencyUnavailableError("The audit trail is unavailable."), RuntimeError("bug")]
    rounds: list[datetime] = []

    class FlakySink(MemoryAuditSink):
        async def purge(self, before: datetime) -> int:
            rounds.append(before)
            if failures:
                raise failures.pop(0)
            return 0

    async def sleep(_: float) -> None:
        if len(rounds) == 3:
            raise _Stop

    with pytest.raises(_Stop):
        await AuditRetention(FlakySink(), FakeClock(NOW), 7, sleep=sleep).keep_purging()

    assert rounds == [NOW - timedelta(days=7)] * 3
    assert "The audit trail is unavailable." in caplog.text
    assert "purge failed" in caplog.text


def test_a_retention_of_less_than_a_day_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="days"):
        AuditRetention(MemoryAuditSink(), FakeClock(NOW), 0)


class _Stop(Exception):
    """Ends a schedule under test."""
