"""The monitoring backend on every channel: spans in the caller's trace exported to a real OTLP
receiver, one JSON log line per call with no secret in it, pseudonymized personal data, and the
metrics on a port of their own, authorized as on the API port.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.conftest import StartAuthApp, build_app
from tests.e2e.identity import PASSWORD, login
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan

from nexus import Nexus, RunningNexus
from nexus.core.types import Channel, Outcome
from nexus.enterprise.auth import RBACManager
from nexus.enterprise.monitoring import PrometheusMonitoring
from nexus.errors import ConfigurationError
from nexus.testing import client_for
from nexus.testing.clients import ChannelClient

SERVICE = "nexus-e2e"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER
WRONG_KEY = "nxk_0123456789ab_not-the-secret"
# Distinctive input values: neither they nor the sum may show up in any log line.
SECRET_A, SECRET_B = 7340021, 1
LOG_FIELDS = {
    "timestamp",
    "level",
    "event",
    "channel",
    "workflow",
    "action",
    "outcome",
    "error_code",
    "duration_ms",
    "request_id",
    "tenant",
    "principal",
    "client",
    "trace_id",
    "span_id",
}


def new_trace_parent() -> tuple[str, str, str]:
    """(traceparent header, trace id, parent span id), sampled."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


@dataclass
class Monitored:
    server: RunningNexus
    receiver: OtlpReceiver
    log: io.StringIO
    calc_token: str
    calc_principal: str
    scraper_token: str
    nobody_token: str

    def client(self, channel: Channel, token: str | None, trace_parent: str | None = None) -> ChannelClient:
        return client_for(channel, self.server.api_url, self.server.mcp_url, token, trace_parent=trace_parent)

    async def stop(self) -> None:
        """Stop serving: the app flushes its spans and log lines on the way out."""
        await asyncio.to_thread(self.server.stop)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]

    def spans_in(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.receiver.spans() if span.trace_id == trace_id]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


StartMonitored = Callable[..., Any]


@pytest.fixture
async def monitored(auth_app: StartAuthApp, receiver: OtlpReceiver) -> StartMonitored:
    """`await monitored(metrics_port=None)`: an app with auth and roles, traces to `receiver` and
    call logs to a buffer; keys for a calculator (`*:read:*`, `*:execute:math`), a scraper
    (`api:read:metrics`) and a key with no role."""

    async def start(*, metrics_port: int | None = None, compliance_mode: str | None = None) -> Monitored:
        log = io.StringIO()

        def configure(app: Nexus) -> None:
            app.auth.compliance_mode = compliance_mode
            rbac = RBACManager()
            rbac.create_role("calc", ["*:read:*", "*:execute:math"])
            rbac.create_role("scraper", ["api:read:metrics"])
            app.set_rbac_manager(rbac)
            app.monitoring.backend = PrometheusMonitoring(
                metrics_port=metrics_port,
                enable_traces=True,
                enable_logs=True,
                traces_endpoint=receiver.endpoint,
                service_name=SERVICE,
                log_stream=log,
            )

        server = await auth_app(configure, users={"alice": ["calc"]})
        calc = await server.app.create_api_key("calc", roles=["calc"])
        scraper = await server.app.create_api_key("scraper", roles=["scraper"])
        nobody = await server.app.create_api_key("nobody")
        return Monitored(
            server,
            receiver,
            log,
            calc.plaintext,
            f"key:{calc.key.key_id}",
            scraper.plaintext,
            nobody.plaintext,
        )

    return start


def _named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == name]


# -- traces ----------------------------------------------------------------------------------------


async def test_a_call_carrying_a_traceparent_is_a_span_in_the_callers_trace(
    monitored: StartMonitored, channel: Channel
) -> None:
    mon: Monitored = await monitored()
    header, trace_id, parent_id = new_trace_parent()
    reply = await mon.client(channel, mon.calc_token, header).execute("add", {"a": 2, "b": 40})
    assert reply.ok, reply
    await mon.stop()
    mon.receiver.wait_for(lambda spans: bool(_named(spans, "nexus.run add")))
    spans = mon.spans_in(trace_id)
    [call] = _named(spans, "nexus.execute add")
    assert call.parent_span_id == parent_id
    assert call.kind == SERVER_KIND
    assert not call.is_error
    assert call.resource["service.name"] == SERVICE
    attributes = call.attributes
    assert attributes["nexus.channel"] == channel.value
    assert (attributes["nexus.workflow"], attributes["nexus.action"]) == ("add", "execute")
    assert attributes["nexus.outcome"] == "success"
    assert "nexus.error_code" not in attributes
    assert attributes["enduser.id"] == mon.calc_principal
    assert attributes["nexus.run_id"] == reply.body["run_id"]
    assert attributes["nexus.request_id"]
    [run] = _named(spans, "nexus.run add")
    assert (run.parent_span_id, run.attributes["nexus.run_id"]) == (call.span_id, reply.body["run_id"])
    assert call.start_ns <= run.start_ns <= run.end_ns <= call.end_ns


@pytest.mark.parametrize(
    ("refusal", "workflow", "outcome", "code"),
    [
        ("bad_credential", "add", Outcome.UNAUTHENTICATED, "not_authenticated"),
        ("forbidden", "explode", Outcome.FORBIDDEN, "forbidden"),
    ],
)
async def test_a_refused_call_is_an_error_span_with_its_code(
    monitored: StartMonitored, channel: Channel, refusal: str, workflow: str, outcome: Outcome, code: str
) -> None:
    mon: Monitored = await monitored()
    header, trace_id, parent_id = new_trace_parent()
    token = WRONG_KEY if refusal == "bad_credential" else mon.calc_token
    reply = await mon.client(channel, token, header).execute(workflow, {"reason": "no"})
    assert reply.outcome is outcome, reply
    await mon.stop()
    mon.receiver.wait_for(lambda spans: any(span.trace_id == trace_id for span in spans))
    refused = [span for span in mon.spans_in(trace_id) if span.attributes["nexus.outcome"] == outcome.value]
    assert refused, mon.spans_in(trace_id)
    for span in refused:
        assert span.is_error
        assert span.status_message == code
        assert span.attributes["nexus.error_code"] == code
        assert span.attributes["nexus.channel"] == channel.value
        assert span.parent_span_id == parent_id
    # A refused call never ran: no run span in its trace.
    assert not [span for span in mon.spans_in(trace_id) if span.name.startswith("nexus.run")]


async def test_mcp_meta_traceparent_parents_the_span(monitored: StartMonitored) -> None:
    mon: Monitored = await monitored()
    _, trace_id, parent_id = new_trace_parent()
    caller = SpanContext(int(trace_id, 16), int(parent_id, 16), is_remote=False, trace_flags=TraceFlags(1))
    # The SDK's client puts the ambient W3C context into each request's `_meta`; no header is sent.
    with trace.use_span(NonRecordingSpan(caller)):
        reply = await mon.client(Channel.MCP, mon.calc_token).execute("add", {"a": 1, "b": 2})
    assert reply.ok, reply
    await mon.stop()
    mon.receiver.wait_for(lambda spans: bool(_named(spans, "nexus.execute add")))
    [call] = _named(mon.spans_in(trace_id), "nexus.execute add")
    assert call.parent_span_id == parent_id


# -- call logs ---------------------------------------------------------------------------------------


async def test_each_call_is_one_json_log_line_with_its_trace_id_and_no_secret(
    monitored: StartMonitored, channel: Channel
) -> None:
    mon: Monitored = await monitored()
    header, trace_id, _ = new_trace_parent()
    reply = await mon.client(channel, mon.calc_token, header).execute("add", {"a": SECRET_A, "b": SECRET_B})
    assert reply.ok, reply
    grant = await login(mon.server, channel, "alice", PASSWORD)
    assert grant.status == 200, grant.body
    refused = await mon.client(channel, WRONG_KEY).execute("add", {"a": SECRET_A, "b": SECRET_B})
    assert refused.outcome is Outcome.UNAUTHENTICATED, refused
    await mon.stop()
    audited = await mon.server.app.audit_log(limit=1000)
    lines = mon.lines()
    # One line per call: exactly the calls the audit trail recorded.
    assert sorted(line["request_id"] for line in lines) == sorted(r.request_id for r in audited)
    assert all(set(line) == LOG_FIELDS | ({"run_id"} if "run_id" in line else set()) for line in lines)
    assert all(line["event"] == "call" for line in lines)
    # (An MCP host logs in over HTTP, asking for an MCP token: that step is the API channel's.)
    assert all(line["channel"] == channel.value for line in lines if line["action"] != "login")
    assert all(line["timestamp"].endswith("Z") for line in lines)
    [executed] = [line for line in lines if line["workflow"] == "add" and line["outcome"] == "success"]
    assert executed["trace_id"] == trace_id
    assert executed["run_id"] == reply.body["run_id"]
    assert (executed["principal"], executed["level"]) == (mon.calc_principal, "info")
    [span] = _named(mon.spans_in(trace_id), "nexus.execute add")
    assert executed["span_id"] == span.span_id
    assert {line["action"] for line in lines} >= {"execute", "login"}
    assert any(line["outcome"] == "unauthenticated" and line["level"] == "warning" for line in lines)
    text = mon.log.getvalue()
    for secret in (
        mon.calc_token,
        WRONG_KEY,
        PASSWORD,
        *(value for key, value in grant.body.items() if "token" in key and isinstance(value, str)),
        str(SECRET_A),
        str(SECRET_A + SECRET_B),
    ):
        assert secret not in text


async def test_under_gdpr_telemetry_names_no_principal_or_address(
    monitored: StartMonitored, channel: Channel
) -> None:
    """compliance_mode "gdpr" (and "enterprise"): spans and log lines carry pseudonyms; the audit
    trail keeps who it was."""
    mon: Monitored = await monitored(compliance_mode="gdpr")
    header, trace_id, _ = new_trace_parent()
    for _ in range(2):
        reply = await mon.client(channel, mon.calc_token, header).execute("add", {"a": 1, "b": 2})
        assert reply.ok, reply
    await mon.stop()
    mon.receiver.wait_for(lambda spans: len(_named(spans, "nexus.execute add")) == 2)
    lines = [line for line in mon.lines() if line["workflow"] == "add"]
    spans = _named(mon.spans_in(trace_id), "nexus.execute add")
    principals = {line["principal"] for line in lines} | {span.attributes["enduser.id"] for span in spans}
    clients = {line["client"] for line in lines} | {span.attributes["client.address"] for span in spans}
    # The same person and address get the same pseudonym in spans and lines (still correlatable).
    assert len(principals) == len(clients) == 1
    assert all(value.startswith("p:") and len(value) == 18 for value in principals | clients)
    exported = repr([span.attributes for span in mon.receiver.spans()])
    for personal in (mon.calc_principal, "127.0.0.1"):
        assert personal not in mon.log.getvalue()
        assert personal not in exported
    audited = await mon.server.app.audit_log(workflow="add")
    assert {record.principal_id for record in audited} == {mon.calc_principal}


# -- the metrics port ----------------------------------------------------------------------------------


def _requests_total(text: str) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["channel"], s.labels["workflow"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "nexus_channel_requests_total"
    }


async def test_metrics_port_serves_metrics_to_a_key_holding_api_read_metrics(
    monitored: StartMonitored,
) -> None:
    mon: Monitored = await monitored(metrics_port=0)
    url = mon.server.metrics_url
    assert url is not None
    assert mon.server.metrics_port not in (None, mon.server.api_port, mon.server.mcp_port)
    reply = await mon.client(Channel.API, mon.calc_token).execute("add", {"a": 1, "b": 2})
    assert reply.ok, reply
    base = url.removesuffix("/metrics")
    async with httpx2.AsyncClient(timeout=10) as http:
        scraped = await http.get(url, headers={"authorization": f"Bearer {mon.scraper_token}"})
        anonymous = await http.get(url)
        no_role = await http.get(url, headers={"authorization": f"Bearer {mon.nobody_token}"})
        elsewhere = [
            await http.get(f"{base}{path}", headers={"authorization": f"Bearer {mon.scraper_token}"})
            for path in ("/health", "/workflows", "/mcp", "/metrics/x")
        ]
        posted = await http.post(url, headers={"authorization": f"Bearer {mon.scraper_token}"})
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert _requests_total(scraped.text)[("api", "add", "success")] == 1
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "not_authenticated")
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert (no_role.status_code, no_role.json()["code"]) == (403, "forbidden")
    assert [answer.status_code for answer in elsewhere] == [404, 404, 404, 404]
    assert posted.status_code == 404
    # Refusals are audited as on the API port; admitted scrapes are not.
    records = await mon.server.app.audit_log(workflow="_metrics")
    assert sorted((r.outcome.value, r.error_code) for r in records) == [
        ("forbidden", "forbidden"),
        ("unauthenticated", "not_authenticated"),
    ]
    await mon.stop()
    with pytest.raises(httpx2.TransportError):
        httpx2.get(url, timeout=5)


async def test_metrics_port_without_auth_serves_anyone(tmp_path: Path) -> None:
    app = build_app(f"sqlite:///{tmp_path}/open.db")
    app.monitoring.backend = PrometheusMonitoring(metrics_port=0)
    server = await asyncio.to_thread(app.start_in_thread)
    try:
        assert server.metrics_url is not None
        async with httpx2.AsyncClient(timeout=10) as http:
            scraped = await http.get(server.metrics_url)
            other = await http.get(server.metrics_url.replace("/metrics", "/docs"))
        assert scraped.status_code == 200
        assert "nexus_channel_requests_total" in scraped.text
        assert other.status_code == 404
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_taken_metrics_port_is_a_start_up_error_naming_it(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        busy = holder.getsockname()[1]
        app = build_app(f"sqlite:///{tmp_path}/busy.db")
        app.monitoring.backend = PrometheusMonitoring(metrics_port=busy)
        with pytest.raises(ConfigurationError, match=rf"127\.0\.0\.1:{busy} \(metrics_port\)"):
            await asyncio.to_thread(app.start_in_thread)
    # Nothing was left bound or frozen: once the port is free the same app serves.
    server = await asyncio.to_thread(app.start_in_thread)
    try:
        assert server.metrics_port == busy
    finally:
        await asyncio.to_thread(server.stop)
