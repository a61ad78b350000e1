"""The call observer: span shape (OpenTelemetry SDK, in-memory exporter), call log lines, pseudonyms."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from nexus.backends.call_log import JsonCallLog
from nexus.backends.call_observer import Pseudonym, TelemetryObserver, open_call_observer
from nexus.backends.otel import OtelSpanRecorder, traces_endpoint
from nexus.core.telemetry import NoopCallObserver
from nexus.core.types import (
    Action,
    CallRecord,
    Channel,
    Credential,
    Invocation,
    Outcome,
    Principal,
    RunTiming,
)
from nexus.enterprise.monitoring import PrometheusMonitoring

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACE_PARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
STARTED = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SECRET = "nxk_abcdef012345_the-secret-part"


def _call(
    *,
    outcome: Outcome = Outcome.SUCCESS,
    error_code: str | None = None,
    trace_parent: str | None = TRACE_PARENT,
    run: RunTiming | None = None,
    principal: Principal | None = None,
) -> CallRecord:
    invocation = Invocation(
        request_id="req-0001",
        channel=Channel.CLI,
        workflow="payroll",
        inputs={"salary": 123456},
        credential=Credential("bearer", SECRET),
        client_addr="10.1.2.3",
        principal=principal or Principal(id="key:k1", kind="api_key"),
        action=Action.EXECUTE,
        tenant_id="client001",
        trace_parent=trace_parent,
    )
    return CallRecord(invocation, "payroll", outcome, error_code, STARTED, 0.5, run)


def _recorder(exporter: InMemorySpanExporter, conceal: Pseudonym | None = None) -> OtelSpanRecorder:
    return OtelSpanRecorder(
        endpoint=None, service_name="billing", conceal=conceal or (lambda value: value), exporter=exporter
    )


async def test_a_call_is_a_server_span_in_the_callers_trace_with_a_child_for_its_run() -> None:
    exporter = InMemorySpanExporter()
    recorder = _recorder(exporter)
    trace_id, span_id = recorder.record(_call(run=RunTiming("run-1", 0.1, 0.3)))
    await recorder.close()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    call, run = spans["nexus.execute payroll"], spans["nexus.run payroll"]
    assert (trace_id, span_id) == (TRACE_ID, f"{call.context.span_id:016x}")
    assert call.parent is not None
    assert f"{call.parent.span_id:016x}" == PARENT_ID
    assert call.kind is SpanKind.SERVER
    assert call.status.status_code is StatusCode.UNSET
    assert call.resource.attributes["service.name"] == "billing"
    assert dict(call.attributes or {}) == {
        "nexus.channel": "cli",
        "nexus.workflow": "payroll",
        "nexus.action": "execute",
        "nexus.outcome": "success",
        "nexus.request_id": "req-0001",
        "nexus.tenant_id": "client001",
        "nexus.run_id": "run-1",
        "enduser.id": "key:k1",
        "client.address": "10.1.2.3",
    }
    start = int(STARTED.timestamp()) * 1_000_000_000
    assert (call.start_time, call.end_time) == (start, start + 500_000_000)
    assert run.parent is not None
    assert run.parent.span_id == call.context.span_id
    assert (run.start_time, run.end_time) == (start + 100_000_000, start + 400_000_000)


async def test_a_refused_call_is_an_error_span_naming_its_code() -> None:
    exporter = InMemorySpanExporter()
    recorder = _recorder(exporter)
    recorder.record(_call(outcome=Outcome.FORBIDDEN, error_code="forbidden"))
    await recorder.close()
    [span] = exporter.get_finished_spans()
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "forbidden")
    assert span.attributes is not None
    assert (span.attributes["nexus.error_code"], span.attributes["error.type"]) == ("forbidden", "forbidden")


@pytest.mark.parametrize("trace_parent", [None, "", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"])
async def test_a_missing_or_malformed_traceparent_starts_a_trace(trace_parent: str | None) -> None:
    exporter = InMemorySpanExporter()
    recorder = _recorder(exporter)
    trace_id, _ = recorder.record(_call(trace_parent=trace_parent))
    await recorder.close()
    [span] = exporter.get_finished_spans()
    assert span.parent is None
    assert trace_id not in (TRACE_ID, "0" * 32)


async def test_no_span_carries_inputs_or_credentials() -> None:
    exporter = InMemorySpanExporter()
    recorder = _recorder(exporter)
    recorder.record(_call(run=RunTiming("run-1", 0.0, 0.1)))
    await recorder.close()
    exported = repr([(span.name, dict(span.attributes or {})) for span in exporter.get_finished_spans()])
    assert "123456" not in exported
    assert SECRET not in exported


def test_traces_endpoint_gets_the_signal_path_only_when_it_names_none() -> None:
    assert traces_endpoint(None) is None
    assert traces_endpoint("http://jaeger:4318") == "http://jaeger:4318/v1/traces"
    assert traces_endpoint("http://jaeger:4318/") == "http://jaeger:4318/v1/traces"
    assert traces_endpoint("https://otel.example/ingest/traces") == "https://otel.example/ingest/traces"


async def test_a_log_line_holds_ids_names_and_timings_and_nothing_the_caller_sent() -> None:
    stream = io.StringIO()
    log = JsonCallLog(stream=stream, conceal=lambda value: value)
    log.write(_call(run=RunTiming("run-1", 0.0, 0.1)), TRACE_ID, PARENT_ID)
    log.write(_call(outcome=Outcome.ERROR, error_code="internal_error"))
    await log.close()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(first)[:3] == ["timestamp", "level", "event"]
    assert first["timestamp"].endswith("Z")
    assert datetime.fromisoformat(first["timestamp"]).tzinfo is not None
    del first["timestamp"]
    assert first == {
        "level": "info",
        "event": "call",
        "channel": "cli",
        "workflow": "payroll",
        "action": "execute",
        "outcome": "success",
        "error_code": None,
        "duration_ms": 500.0,
        "request_id": "req-0001",
        "tenant": "client001",
        "principal": "key:k1",
        "client": "10.1.2.3",
        "run_id": "run-1",
        "trace_id": TRACE_ID,
        "span_id": PARENT_ID,
    }
    assert (second["level"], second["error_code"]) == ("error", "internal_error")
    assert "trace_id" not in second
    assert "123456" not in stream.getvalue()
    assert SECRET not in stream.getvalue()


def test_pseudonyms_are_keyed_stable_and_short() -> None:
    key = b"k" * 32
    pseudonym = Pseudonym(key)
    assert pseudonym("key:k1") == pseudonym("key:k1") == Pseudonym(key)("key:k1")
    assert pseudonym("key:k1") != pseudonym("key:k2")
    assert pseudonym("key:k1") != Pseudonym(b"x" * 32)("key:k1")  # another app, another key
    value = pseudonym("10.1.2.3")
    assert value.startswith("p:")
    assert len(value) == 18
    assert set(value[2:]) <= set("0123456789abcdef")


async def test_pseudonymized_observer_hides_principal_and_address_in_spans_and_lines() -> None:
    stream = io.StringIO()
    exporter = InMemorySpanExporter()
    pseudonym = Pseudonym()
    observer = TelemetryObserver(
        _recorder(exporter, pseudonym), JsonCallLog(stream=stream, conceal=pseudonym)
    )
    observer.observe(_call())
    observer.observe(_call(principal=Principal(id="anonymous", kind="anonymous")))
    await observer.close()
    named, anonymous = (json.loads(line) for line in stream.getvalue().splitlines())
    [span, _] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert named["principal"] == span.attributes["enduser.id"] == pseudonym("key:k1")
    assert named["client"] == span.attributes["client.address"] == pseudonym("10.1.2.3")
    assert named["trace_id"] == TRACE_ID
    assert anonymous["principal"] == "anonymous"  # nobody's data: left readable
    assert "key:k1" not in stream.getvalue()
    assert "10.1.2.3" not in stream.getvalue()


def test_a_backend_asking_for_neither_traces_nor_logs_observes_nothing() -> None:
    assert isinstance(open_call_observer(None), NoopCallObserver)
    assert isinstance(open_call_observer(PrometheusMonitoring(metrics_port=9090)), NoopCallObserver)


async def test_the_observer_writes_to_the_backends_log_stream() -> None:
    stream = io.StringIO()
    observer = open_call_observer(
        PrometheusMonitoring(enable_logs=True, log_stream=stream), pseudonymize=True
    )
    observer.observe(_call())
    await observer.close()
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["principal"].startswith("p:")
