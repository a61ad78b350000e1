"""Where spans go, against a real OTLP/HTTP receiver: `traces_endpoint`, else the standard
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from tests.support.otlp_receiver import OtlpReceiver

from nexus.backends.otel import OtelSpanRecorder
from nexus.core.types import CallRecord, Channel, Invocation, Outcome

NOWHERE = "http://127.0.0.1:9/v1/traces"  # the discard port: nothing answers there


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


def _call(request_id: str) -> CallRecord:
    invocation = Invocation(request_id, Channel.API, "add", {})
    return CallRecord(invocation, "add", Outcome.SUCCESS, None, datetime.now(UTC), 0.01)


async def _export(endpoint: str | None, request_id: str) -> None:
    recorder = OtelSpanRecorder(endpoint=endpoint, service_name="nexus", conceal=str)
    recorder.record(_call(request_id))
    await recorder.close()


def _arrived(receiver: OtlpReceiver, request_id: str) -> bool:
    spans = receiver.wait_for(lambda spans: bool(spans))
    return any(span.attributes.get("nexus.request_id") == request_id for span in spans)


@pytest.mark.parametrize(
    ("variable", "suffix"),
    [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "")],
)
async def test_without_traces_endpoint_the_standard_variables_say_where(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, variable: str, suffix: str
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", NOWHERE.removesuffix("/v1/traces"))
    monkeypatch.setenv(variable, f"{receiver.endpoint}{suffix}")
    await _export(None, f"req-{variable}")
    assert _arrived(receiver, f"req-{variable}")


async def test_traces_endpoint_wins_over_the_environment(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", NOWHERE)
    await _export(receiver.endpoint, "req-explicit")
    assert _arrived(receiver, "req-explicit")
