"""`app.auth.compliance_mode` and `app.auth.audit_log_retention`: checked at start, naming the
setting and the fix, then enforced: a serving app purges expired audit records at start, and
`purge_audit_log` / `verify_audit_log` work on the app's state store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.support.records import audit_record

from nexus import Nexus
from nexus.backends.sql import open_state
from nexus.core.types import AuditRecord
from nexus.enterprise.auth import EnterpriseAuthProvider, MultiFactorAuth
from nexus.errors import ConfigurationError


def app_at(tmp_path: Path, *, enable_auth: bool = True) -> Nexus:
    return Nexus(api_port=0, mcp_port=0, enable_auth=enable_auth, state_url=f"sqlite:///{tmp_path}/c.db")


def record(request_id: str, age: timedelta) -> AuditRecord:
    return audit_record(request_id, datetime.now(UTC) - age)


async def seed(tmp_path: Path) -> None:
    """One record 40 days old, one a day old, in the app's state store."""
    state = await open_state(f"sqlite:///{tmp_path}/c.db")
    try:
        await state.audit.record(record("old", timedelta(days=40)))
        await state.audit.record(record("recent", timedelta(days=1)))
    finally:
        await state.close()


async def purged_at_start(app: Nexus) -> list[str]:
    """The request ids left once the serving app's first purge removed "old" (or 5 s passed)."""
    for _ in range(100):
        left = [r.request_id for r in await app.audit_log()]
        if "old" not in left:
            break
        await asyncio.sleep(0.05)
    return left


def refused(app: Nexus) -> str:
    with pytest.raises(ConfigurationError) as caught:
        app.start_in_thread()
    assert not app.auth.__dict__.get("_frozen", False)  # nothing left frozen by the refusal
    return caught.value.message


async def test_the_documents_production_settings_start(tmp_path: Path) -> None:
    app = app_at(tmp_path)
    app.auth.provider = EnterpriseAuthProvider(enable_api_keys=True, enable_mfa=True)
    app.auth.compliance_mode = "enterprise"  # GDPR + HIPAA + SOX
    app.auth.audit_log_retention = 2557  # 7 years

    async with app.serving() as running:
        assert running.api_port > 0


@pytest.mark.parametrize("mode", ["GDPR", "pci", 3])
def test_an_unknown_mode_is_refused_naming_the_valid_ones(tmp_path: Path, mode: object) -> None:
    app = app_at(tmp_path)
    app.auth.compliance_mode = mode

    assert "app.auth.compliance_mode must be 'gdpr', 'hipaa', 'sox', 'enterprise' or None" in refused(app)


@pytest.mark.parametrize("days", [0, -1, 2557.5, "7 years", True])
def test_a_retention_that_is_not_a_positive_whole_number_of_days_is_refused(
    tmp_path: Path, days: object
) -> None:
    app = app_at(tmp_path)
    app.auth.audit_log_retention = days

    assert "app.auth.audit_log_retention must be a positive whole number of days" in refused(app)


@pytest.mark.parametrize("mode", ["gdpr", "sox", "enterprise"])
def test_a_mode_with_auth_off_is_refused_for_the_audit_trails_sake(tmp_path: Path, mode: str) -> None:
    app = app_at(tmp_path, enable_auth=False)
    app.auth.compliance_mode = mode

    message = refused(app)

    assert f"app.auth.compliance_mode {mode!r} needs enable_auth=True" in message
    assert "every audit record must name an authenticated principal" in message
    assert "nothing would use it" not in message


async def test_a_retention_alone_needs_no_auth_and_is_enforced(tmp_path: Path) -> None:
    await seed(tmp_path)
    app = app_at(tmp_path, enable_auth=False)
    app.auth.audit_log_retention = 30

    async with app.serving():  # not refused as "nothing would use it": the audit trail uses it
        left = await purged_at_start(app)

    assert left == ["recent"]


@pytest.mark.parametrize(
    ("mode", "days", "floor"), [("sox", 365, 2557), ("enterprise", 2190, 2557), ("hipaa", 2191, 2192)]
)
def test_a_retention_below_the_modes_floor_is_refused(
    tmp_path: Path, mode: str, days: int, floor: int
) -> None:
    app = app_at(tmp_path)
    app.auth.mfa = MultiFactorAuth()
    app.auth.compliance_mode = mode
    app.auth.audit_log_retention = days

    message = refused(app)

    assert f"app.auth.audit_log_retention is {days} days" in message
    assert f"at least {floor} days" in message


@pytest.mark.parametrize("mode", ["hipaa", "enterprise"])
def test_hipaa_without_a_second_factor_on_every_channel_is_refused(tmp_path: Path, mode: str) -> None:
    none = app_at(tmp_path)
    none.auth.compliance_mode = mode
    api_only = app_at(tmp_path)
    api_only.auth.compliance_mode = mode
    api_only.auth.mfa = MultiFactorAuth(required_for=["api"])
    mfa_off = app_at(tmp_path)
    mfa_off.auth.compliance_mode = mode
    mfa_off.auth.provider = EnterpriseAuthProvider(enable_mfa=False)

    assert "none is required on: api, cli, mcp" in refused(none)
    assert "none is required on: cli, mcp" in refused(api_only)
    assert "enable_mfa=True" in refused(mfa_off)


def test_hipaa_with_roles_exempt_from_the_second_factor_is_refused(tmp_path: Path) -> None:
    app = app_at(tmp_path)
    app.auth.compliance_mode = "hipaa"
    app.auth.mfa = MultiFactorAuth(bypass_roles=["system", "automated"])

    assert "bypass_roles exempts automated, system" in refused(app)


@pytest.mark.parametrize("mfa_by", ["provider", "mfa"])
async def test_hipaa_starts_with_a_second_factor_required_everywhere(tmp_path: Path, mfa_by: str) -> None:
    app = app_at(tmp_path)
    app.auth.compliance_mode = "hipaa"
    if mfa_by == "provider":
        app.auth.provider = EnterpriseAuthProvider(enable_mfa=True)
    else:
        app.auth.mfa = MultiFactorAuth(methods=["totp"], required_for=["api", "cli", "mcp"])

    async with app.serving() as running:
        assert running.api_port > 0


async def test_sox_keeps_records_seven_years_when_no_retention_is_given(tmp_path: Path) -> None:
    state = await open_state(f"sqlite:///{tmp_path}/c.db")
    try:
        await state.audit.record(record("eight-years", timedelta(days=2922)))
        await state.audit.record(record("six-years", timedelta(days=2191)))
    finally:
        await state.close()
    app = app_at(tmp_path)
    app.auth.compliance_mode = "sox"

    removed = await app.purge_audit_log()

    assert removed == 1
    assert [r.request_id for r in await app.audit_log()] == ["six-years"]


async def test_without_a_retention_nothing_is_ever_purged(tmp_path: Path) -> None:
    await seed(tmp_path)
    app = app_at(tmp_path, enable_auth=False)

    assert await app.purge_audit_log() == 0
    assert len(await app.audit_log()) == 2


async def test_verify_audit_log_reports_the_chain_after_a_purge(tmp_path: Path) -> None:
    await seed(tmp_path)
    app = app_at(tmp_path)
    app.auth.audit_log_retention = 30

    before = await app.verify_audit_log()
    await app.purge_audit_log()
    after = await app.verify_audit_log()

    assert (before.intact, before.checked, before.first_seq) == (True, 2, 1)
    assert (after.intact, after.checked, after.first_seq, after.last_seq) == (True, 1, 2, 2)


async def test_a_serving_app_purges_expired_records_at_start(tmp_path: Path) -> None:
    await seed(tmp_path)
    app = app_at(tmp_path)
    app.auth.audit_log_retention = 30

    async with app.serving():
        left = await purged_at_start(app)

    assert left == ["recent"]
    assert (await app.verify_audit_log()).intact
