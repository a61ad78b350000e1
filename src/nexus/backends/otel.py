"""Traces of pipeline calls: one OpenTelemetry span per call, and a child span for an execute's
workflow run, built after the fact from the times the pipeline recorded.

Spans go through a `BatchSpanProcessor` (its own thread) to the OTLP/HTTP exporter, from a tracer
provider of this app's own (never the global one). The span attribute names live here. Imports no
channel code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from nexus.core.telemetry import shown_principal
from nexus.core.types import Action, CallRecord, Outcome

TRACES_PATH = "/v1/traces"
CHANNEL = "nexus.channel"
WORKFLOW = "nexus.workflow"
ACTION = "nexus.action"
OUTCOME = "nexus.outcome"
ERROR_CODE = "nexus.error_code"
TENANT_ID = "nexus.tenant_id"
REQUEST_ID = "nexus.request_id"
RUN_ID = "nexus.run_id"
PRINCIPAL = "enduser.id"
CLIENT_ADDRESS = "client.address"
ERROR_TYPE = "error.type"

_NS = 1_000_000_000
_ROOT = Context()  # a call without a (valid) traceparent starts a trace, whatever is ambient


def traces_endpoint(configured: str | None) -> str | None:
    """The collector URL to export to: `configured`, with `/v1/traces` when it names no path;
    None leaves it to the exporter's environment variables and default."""
    if configured is None:
        return None
    parts = urlsplit(configured)
    if parts.path in ("", "/"):
        return urlunsplit(parts._replace(path=TRACES_PATH))
    return configured


def _nanoseconds(call: CallRecord) -> tuple[int, int]:
    start = int(call.started_at.timestamp() * _NS)
    return start, start + int(call.duration_s * _NS)


class OtelSpanRecorder:
    """Records each call as a span; `conceal` is applied to the principal id and client address."""

    def __init__(
        self,
        *,
        endpoint: str | None,
        service_name: str,
        conceal: Callable[[str], str],
        exporter: SpanExporter | None = None,
    ) -> None:
        """`exporter` replaces the OTLP/HTTP one (for tests of the span shape only)."""
        # Every call is a span, whatever the caller's trace-flags say: a caller sending an
        # unsampled traceparent must not switch off the monitoring of its own calls.
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            sampler=ALWAYS_ON,
            shutdown_on_exit=False,
        )
        chosen = exporter if exporter is not None else OTLPSpanExporter(endpoint=traces_endpoint(endpoint))
        self._provider.add_span_processor(BatchSpanProcessor(chosen))
        self._tracer = self._provider.get_tracer("nexus")
        self._propagator = TraceContextTextMapPropagator()
        self._conceal = conceal

    def record(self, call: CallRecord) -> tuple[str, str]:
        """Record `call` (ended already); its (trace id, span id) in hex."""
        inv = call.invocation
        start, end = _nanoseconds(call)
        span = self._tracer.start_span(
            f"nexus.{inv.action} {call.workflow}",
            context=self._parent(inv.trace_parent),
            kind=SpanKind.SERVER,
            attributes=self._attributes(call),
            start_time=start,
        )
        failed = call.outcome is not Outcome.SUCCESS
        if failed:
            span.set_status(Status(StatusCode.ERROR, call.error_code or call.outcome.value))
        run = call.run
        if run is not None:
            run_start = start + int(run.offset_s * _NS)
            child = self._tracer.start_span(
                f"nexus.run {call.workflow}",
                context=trace.set_span_in_context(span, _ROOT),
                kind=SpanKind.INTERNAL,
                attributes={WORKFLOW: call.workflow, RUN_ID: run.run_id},
                start_time=run_start,
            )
            if failed:
                child.set_status(Status(StatusCode.ERROR, call.error_code or call.outcome.value))
            child.end(end_time=run_start + int(run.duration_s * _NS))
        span.end(end_time=end)
        context = span.get_span_context()
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"

    def _parent(self, trace_parent: str | None) -> Context:
        if not trace_parent:
            return _ROOT
        return self._propagator.extract({"traceparent": trace_parent}, _ROOT)

    def _attributes(self, call: CallRecord) -> dict[str, AttributeValue]:
        inv = call.invocation
        action = inv.action.value if isinstance(inv.action, Action) else inv.action
        attributes: dict[str, AttributeValue] = {
            CHANNEL: inv.channel.value,
            WORKFLOW: call.workflow,
            ACTION: action,
            OUTCOME: call.outcome.value,
            REQUEST_ID: inv.request_id,
            PRINCIPAL: shown_principal(call, self._conceal),
        }
        if call.error_code is not None:
            attributes[ERROR_CODE] = attributes[ERROR_TYPE] = call.error_code
        if inv.tenant_id is not None:
            attributes[TENANT_ID] = inv.tenant_id
        if inv.client_addr:
            attributes[CLIENT_ADDRESS] = self._conceal(inv.client_addr)
        if call.run is not None:
            attributes[RUN_ID] = call.run.run_id
        return attributes

    async def close(self) -> None:
        """Export what is queued, then stop (off the event loop: the export is blocking I/O)."""
        await asyncio.to_thread(self._provider.shutdown)
