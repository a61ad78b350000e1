"""PrometheusMeter: what each observation moves, and what `/metrics` renders."""

from __future__ import annotations

import sys

import pytest

from nexus.backends.prometheus import (
    CHANNEL_REQUEST_DURATION,
    CHANNEL_REQUESTS,
    WORKFLOW_DURATION,
    PrometheusMeter,
)
from nexus.core.types import Channel, Outcome


def _requests(meter: PrometheusMeter, channel: str, workflow: str, outcome: str) -> float | None:
    labels = {"channel": channel, "workflow": workflow, "outcome": outcome}
    return meter.registry.get_sample_value(CHANNEL_REQUESTS, labels)


def test_call_counter_moves_per_channel_workflow_and_outcome() -> None:
    meter = PrometheusMeter()

    meter.observe_call(Channel.API, "report", Outcome.SUCCESS, 0.01)
    meter.observe_call(Channel.API, "report", Outcome.SUCCESS, 0.02)
    meter.observe_call(Channel.MCP, "report", Outcome.FORBIDDEN, 0.001)
    meter.observe_call(Channel.CLI, "ingest", Outcome.RATE_LIMITED, 0.001)

    assert _requests(meter, "api", "report", "success") == 2
    assert _requests(meter, "mcp", "report", "forbidden") == 1
    assert _requests(meter, "cli", "ingest", "rate_limited") == 1
    assert _requests(meter, "mcp", "report", "success") is None


def test_call_duration_histogram_counts_and_sums_per_channel() -> None:
    meter = PrometheusMeter()

    meter.observe_call(Channel.API, "report", Outcome.SUCCESS, 0.25)
    meter.observe_call(Channel.API, "ingest", Outcome.FAILED, 0.5)
    meter.observe_call(Channel.CLI, "report", Outcome.SUCCESS, 2.0)

    sample = meter.registry.get_sample_value
    assert sample(f"{CHANNEL_REQUEST_DURATION}_count", {"channel": "api"}) == 2
    assert sample(f"{CHANNEL_REQUEST_DURATION}_sum", {"channel": "api"}) == pytest.approx(0.75)
    assert sample(f"{CHANNEL_REQUEST_DURATION}_count", {"channel": "cli"}) == 1
    assert sample(f"{CHANNEL_REQUEST_DURATION}_bucket", {"channel": "api", "le": "0.25"}) == 1
    assert sample(f"{CHANNEL_REQUEST_DURATION}_bucket", {"channel": "api", "le": "0.5"}) == 2


def test_workflow_duration_histogram_counts_per_workflow() -> None:
    meter = PrometheusMeter()

    meter.observe_workflow("report", 0.2)
    meter.observe_workflow("report", 0.4)
    meter.observe_workflow("ingest", 12.0)

    sample = meter.registry.get_sample_value
    assert sample(f"{WORKFLOW_DURATION}_count", {"workflow": "report"}) == 2
    assert sample(f"{WORKFLOW_DURATION}_sum", {"workflow": "report"}) == pytest.approx(0.6)
    assert sample(f"{WORKFLOW_DURATION}_count", {"workflow": "ingest"}) == 1
    assert sample(f"{WORKFLOW_DURATION}_bucket", {"workflow": "ingest", "le": "10.0"}) == 0
    assert sample(f"{WORKFLOW_DURATION}_bucket", {"workflow": "ingest", "le": "30.0"}) == 1


def test_two_meters_in_one_process_keep_separate_counts() -> None:
    first, second = PrometheusMeter(), PrometheusMeter()

    first.observe_call(Channel.API, "report", Outcome.SUCCESS, 0.01)

    assert _requests(first, "api", "report", "success") == 1
    assert _requests(second, "api", "report", "success") is None


def test_render_returns_prometheus_text_with_every_nexus_metric() -> None:
    meter = PrometheusMeter()
    meter.observe_call(Channel.MCP, "report", Outcome.SUCCESS, 0.01)
    meter.observe_workflow("report", 0.01)

    body, content_type = meter.render()

    text = body.decode()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE nexus_channel_requests_total counter" in text
    assert 'nexus_channel_requests_total{channel="mcp",outcome="success",workflow="report"} 1.0' in text
    assert "# TYPE nexus_channel_request_duration_seconds histogram" in text
    assert 'nexus_workflow_duration_seconds_count{workflow="report"} 1.0' in text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process metrics read /proc")
def test_render_includes_process_metrics() -> None:
    body, _ = PrometheusMeter().render()

    assert b"process_resident_memory_bytes" in body


def test_tenant_usage_is_a_gauge_per_tenant_and_resource_and_a_deleted_tenant_leaves_no_series() -> None:
    meter = PrometheusMeter()
    meter.observe_tenant_usage("acme", "concurrent_workflows", 3)
    meter.observe_tenant_usage("acme", "concurrent_workflows", 2)
    meter.observe_tenant_usage("acme", "cli_sessions", 1)
    meter.observe_tenant_usage("globex", "cli_sessions", 4)
    text = meter.render()[0].decode()
    assert "# TYPE nexus_tenant_resource_usage gauge" in text
    assert 'nexus_tenant_resource_usage{resource="concurrent_workflows",tenant="acme"} 2.0' in text
    meter.forget_tenant("acme")
    text = meter.render()[0].decode()
    assert 'tenant="acme"' not in text
    assert 'nexus_tenant_resource_usage{resource="cli_sessions",tenant="globex"} 4.0' in text
    meter.forget_tenant("nobody")  # nothing to drop is no error
