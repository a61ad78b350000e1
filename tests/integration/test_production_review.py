"""Review of the production block's monitoring, compliance and clustering (edcac6a, 0e05e1a) on the
real PostgreSQL and a real OTLP receiver: a forged audit row the chain does not see, a caller that
switches its own call's span off, and a compliance mode accepted over an audit trail that a restart
erases. Each test fails because of the defect its xfail reason names (strict xfail)."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import text
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.records import audit_record

from nexus import Nexus, RunningNexus
from nexus.backends.sql import open_state
from nexus.enterprise.monitoring import PrometheusMonitoring
from nexus.errors import ConfigurationError
from nexus.workflow.builder import WorkflowBuilder


@pytest.mark.postgres
async def test_a_row_forged_with_an_id_below_the_chain_start_breaks_verification(postgres_url: str) -> None:
    state = await open_state(postgres_url)
    try:
        for n in range(3):
            await state.audit.record(audit_record(f"real-{n}"))
        before = await state.audit.verify()
        assert before.intact
        assert before.unchained == 0
        async with state.engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO audit_records (id, time, request_id, channel, principal_id, workflow, "
                    "action, outcome, duration_ms, client_addr, reason) VALUES (-1, now(), 'forged', "
                    "'api', 'key:mallory', 'report', 'execute', 'success', 1.0, '', '')"
                )
            )
        assert "key:mallory" in [record.principal_id for record in await state.audit.query()]

        after = await state.audit.verify()

        assert not after.intact, after
    finally:
        await state.close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


async def test_a_caller_cannot_switch_off_the_span_of_its_own_call(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    app = Nexus(api_port=0, mcp_port=0, enable_monitoring=True, state_url=f"sqlite:///{tmp_path}/state.db")
    app.monitoring.backend = PrometheusMonitoring(enable_traces=True, traces_endpoint=receiver.endpoint)
    add = WorkflowBuilder().add_input("a", int).add_input("b", int)
    app.register("add", add.add_node("PythonCodeNode", "add", {"code": "result = a + b"}).build())
    server = app.start_in_thread()
    hidden, seen = secrets.token_hex(16), secrets.token_hex(16)
    try:
        for trace_id, flags in ((hidden, "00"), (seen, "01")):
            reply = httpx2.post(
                f"{server.api_url}/workflows/add/execute",
                json={"inputs": {"a": 1, "b": 2}},
                headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"},
                timeout=10,
            )
            assert reply.status_code == 200, reply.text
    finally:
        await asyncio.to_thread(server.stop)  # flushes the spans

    spans = receiver.wait_for(lambda spans: any(span.trace_id == seen for span in spans))
    assert [span.name for span in spans if span.trace_id == hidden] != [], "the unsampled call left no span"


def test_a_compliance_mode_over_a_state_store_that_a_restart_erases_is_refused() -> None:
    app = Nexus(api_port=0, mcp_port=0, enable_auth=True, state_url="sqlite://")
    app.auth.compliance_mode = "sox"
    started: list[RunningNexus] = []
    try:
        with pytest.raises(ConfigurationError, match="state_url"):
            started.append(app.start_in_thread())
    finally:
        for server in started:
            server.stop()


def test_a_failed_logins_typed_username_is_not_in_the_call_log(tmp_path: Path) -> None:
    log = io.StringIO()
    app = Nexus(
        api_port=0,
        mcp_port=0,
        enable_auth=True,
        enable_monitoring=True,
        state_url=f"sqlite:///{tmp_path}/s.db",
    )
    app.monitoring.backend = PrometheusMonitoring(enable_logs=True, log_stream=log)
    typed = "Tr0ub4dor-and-3-typed-in-the-wrong-field"
    server = app.start_in_thread()
    try:
        reply = httpx2.post(
            f"{server.api_url}/auth/login", json={"username": typed, "password": "wrong"}, timeout=10
        )
        assert reply.status_code == 401, reply.text
    finally:
        server.stop()  # writes every queued line

    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [line["action"] for line in lines] == ["login"]
    assert typed not in log.getvalue(), lines
