"""Review of the production block's compliance and monitoring rules (edcac6a), as pure logic: a
HIPAA retention floor shorter than the six years it names, and a traces endpoint's credentials
echoed in a start-up error. Each test fails because of the defect its xfail reason names (strict
xfail)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nexus.core.compliance import AuditRetention, compliance_policy
from nexus.enterprise.monitoring import PrometheusMonitoring
from nexus.errors import ConfigurationError
from nexus.testing.clock import FakeClock


class _NoSink:
    """`AuditRetention` needs a sink; only its cutoff is under test."""

    async def purge(self, before: datetime) -> int:
        raise AssertionError("not called")


def test_the_hipaa_floor_keeps_records_for_six_calendar_years() -> None:
    policy = compliance_policy("hipaa", None)
    assert policy.retention_days is not None
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    retention = AuditRetention(_NoSink(), FakeClock(now), policy.retention_days)  # type: ignore[arg-type]

    six_years_ago = now.replace(year=now.year - 6)

    # Purged are the records stamped before the cutoff: none of them may be younger than six years.
    assert retention.cutoff() <= six_years_ago, (retention.cutoff(), six_years_ago)


def test_a_refused_traces_endpoint_does_not_echo_its_credentials() -> None:
    with pytest.raises(ConfigurationError) as refused:
        PrometheusMonitoring(
            enable_traces=True, traces_endpoint="htps://tenant:s3cr3t-t0ken@collector.example"
        )

    assert "s3cr3t-t0ken" not in str(refused.value)
