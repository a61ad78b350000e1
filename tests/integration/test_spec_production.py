"""The source document's production block, run as written, against the real servers it names.

`tests/spec/production_deployment.py` is the block with `kailash.` replaced by `nexus.` (its copy is
pinned by test_spec_blocks.py). It runs in its own process on the ports it names (8000, 3000 and the
metrics port 9090). What it names is served on this machine as a deployment would serve it:
`scripts/services` makes `enterprise.local` and `sso.company.com` names of 127.0.0.1, slapd answers
`ldap://enterprise.local` on the standard port, and a pysaml2 identity provider answers
`https://sso.company.com/saml` over TLS with a certificate of a test CA the block trusts through
`SSL_CERT_FILE`. The block names no database: PostgreSQL and Redis come from NEXUS_STATE_URL and
NEXUS_REDIS_URL, as a deployment gives them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
import httpx2
import pyotp
import pytest
import redis
from tests.conftest import require_service
from tests.e2e import identity
from tests.support.ldap import PASSWORDS
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.saml import idp_command, make_key_pair, make_tls_site, xmlsec_binary

from nexus import Nexus, RunningNexus
from nexus.backends.sql.state import open_state
from nexus.core.types import AuditRecord, Channel, Outcome
from nexus.testing import client_for
from nexus.testing.clients import ChannelClient

ROOT = Path(__file__).resolve().parents[2]
BLOCK = ROOT / "tests" / "spec" / "production_deployment.py"
API, MCP, METRICS, SSO = 8000, 3000, 9090, 443
API_URL, MCP_URL = f"http://127.0.0.1:{API}", f"http://127.0.0.1:{MCP}/mcp"
# A Redis database of its own: the block's sessions, counters and cluster membership use the
# default key names, so nothing else may share it.
REDIS_DB = 11
FORM_FIELD = re.compile(r'name="([A-Za-z]+)" value="([^"]*)"')
LOOPBACK_RETURN = "http://127.0.0.1:9/callback"  # the CLI's listener; never contacted here
VERIFIER = "a-code-verifier-only-the-cli-process-knows-0123456789"
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@dataclass(frozen=True)
class Block:
    """The served block: where it answers, the API key made for it, its environment and log."""

    api_url: str
    mcp_url: str
    admin_key: str
    env: dict[str, str]
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(ports: tuple[int, ...], process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while not all(_answers(port) for port in ports):
        assert process.poll() is None, f"{what} stopped:\n{log.read_text(errors='replace')[-4000:]}"
        assert time.monotonic() < deadline, f"{what} did not answer on {ports} within 60 s"
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes], log: Path, *, clean: bool) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    if clean:
        assert code == 0, log.read_text(errors="replace")[-4000:]


def _require_names() -> None:
    for name in ("enterprise.local", "sso.company.com"):
        try:
            address = socket.gethostbyname(name)
        except OSError:
            address = None
        if address != "127.0.0.1":
            pytest.fail(f"{name} must name 127.0.0.1 here (scripts/services adds it to /etc/hosts)")


@pytest.fixture
def sso_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The SAML identity provider at https://sso.company.com (port 443); yields its CA file."""
    directory = tmp_path_factory.mktemp("sso-company")
    site = make_tls_site(directory, "sso.company.com")
    idp, rogue = make_key_pair(directory, "idp"), make_key_pair(directory, "rogue")
    log = directory / "idp.log"
    options = (
        "--base-url=https://sso.company.com",
        f"--tls-cert={site.cert_file}",
        f"--tls-key={site.key_file}",
    )
    command = idp_command(SSO, idp, rogue, xmlsec_binary(), *options, "--allow-unsigned-requests")
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        _wait_for((SSO,), process, log, "the SAML identity provider")
        yield site.ca_file
    finally:
        _stop(process, log, clean=False)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """The OTLP collector the block's traces go to (OTEL_EXPORTER_OTLP_ENDPOINT, as deployed)."""
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
def block(postgres_url: str, sso_site: Path, receiver: OtlpReceiver, tmp_path: Path) -> Iterator[Block]:
    require_service("OpenLDAP on the standard port", "127.0.0.1", 389)
    require_service("Redis", "127.0.0.1", 6379)
    _require_names()
    for port in (API, MCP, METRICS):
        if _answers(port):
            pytest.fail(f"port {port}, which the block serves on, is taken by another process")
    redis_url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "NEXUS_STATE_URL": postgres_url,
        "NEXUS_REDIS_URL": redis_url,
        "SSL_CERT_FILE": str(sso_site),
        "NEXUS_BASE_DOMAIN": "api.company.test",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
    }
    # An operator's API key, made on the same state before the block starts (as `nexus keys create`).
    setup = (
        "import asyncio\n"
        "from nexus import Nexus\n"
        "app = Nexus(enable_auth=True)\n"
        "issued = asyncio.run(app.create_api_key('operator', roles=['admin']))\n"
        "print(issued.plaintext)\n"
    )
    made = subprocess.run(  # noqa: S603
        [sys.executable, "-c", setup], cwd=tmp_path, env=env, check=True, timeout=60, capture_output=True
    )
    admin_key = made.stdout.decode().strip().splitlines()[-1]
    asyncio.run(_audit_history(postgres_url))
    log = tmp_path / "block.log"
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, str(BLOCK)], cwd=tmp_path, env=env, stdout=output, stderr=output
        )
    try:
        _wait_for((API, MCP, METRICS), process, log, "the production block")
        yield Block(API_URL, MCP_URL, admin_key, env, log)
    finally:
        _stop(process, log, clean=True)  # the block's app.start() stops cleanly on Ctrl-C


# Audit records from before the block started: one older than its 7-year retention, one younger
# than that but older than HIPAA's 6 years.
OLD_DAYS = {"beyond-seven-years": 2600, "within-seven-years": 2400}


async def _audit_history(state_url: str) -> None:
    state = await open_state(state_url)
    try:
        for request_id, days in OLD_DAYS.items():
            when = datetime.now(UTC) - timedelta(days=days)
            record = AuditRecord(
                when, request_id, Channel.API, "key:old", "payroll", "execute", Outcome.SUCCESS, None, 1.0
            )
            await state.audit.record(record)
    finally:
        await state.close()


def _client(block: Block, channel: Channel, token: str | None) -> ChannelClient:
    return client_for(channel, block.api_url, block.mcp_url, token)


def _served(block: Block) -> RunningNexus:
    """The identity helpers read only the API URL of what they are handed."""
    return cast(RunningNexus, block)


@pytest.fixture(params=[Channel.API, Channel.CLI, Channel.MCP], ids=lambda c: c.value)
def channel(request: pytest.FixtureRequest) -> Channel:
    return cast(Channel, request.param)


async def test_an_ldap_login_with_totp_works_on_every_channel_and_only_there(
    block: Block, channel: Channel
) -> None:
    """ldap_server="ldap://enterprise.local" and enable_mfa=True: a directory user logs in with
    their directory password, must enroll a second factor, and then gets a token for this channel
    that the others refuse. A TOTP code, once used, is refused."""
    served = _served(block)
    wrong = await identity.login(served, channel, "alice", "not-her-password")
    assert wrong.status == 401
    first = await identity.login(served, channel, "alice", PASSWORDS["alice"])
    assert (first.status, first.code) == (401, "mfa_enrollment_required"), first.body
    prefix = "/cli/v1" if channel is Channel.CLI else ""
    challenge = first.body["challenge_id"]
    enrolled = await identity.post(
        served, f"{prefix}/auth/mfa/enroll", {"challenge_id": challenge, "method": "totp"}
    )
    totp = pyotp.TOTP(enrolled.body["secret"])
    used = totp.now()
    grant = await identity.post(
        served, f"{prefix}/auth/mfa/activate", {"challenge_id": challenge, "code": used}
    )
    assert grant.status == 200, grant.body
    assert grant.body["user"]["id"].startswith("ldap:"), grant.body
    token = grant.body["access_token"]
    listing = await _client(block, channel, token).list_workflows()
    assert listing.ok, listing
    other = Channel.MCP if channel is not Channel.MCP else Channel.API
    refused = await _client(block, other, token).list_workflows()
    assert refused.outcome is Outcome.UNAUTHENTICATED, refused
    # The next login asks for the second factor: the code used to activate it is refused, the
    # next time step's code (within the one step of clock drift allowed) is accepted.
    for code, expected in ((used, 401), (totp.at(time.time() + 30), 200)):
        again = await identity.login(served, channel, "alice", PASSWORDS["alice"])
        assert (again.status, again.code) == (401, "mfa_required"), again.body
        answered = await identity.answer_mfa(served, channel, again.body["challenge_id"], code)
        assert answered.status == expected, answered.body


async def test_a_saml_login_at_sso_company_com_works_on_every_channel(block: Block, channel: Channel) -> None:
    """sso_endpoint="https://sso.company.com/saml": the block read the IdP's metadata over TLS at
    start; a browser sign-on there proves the first factor, and enable_mfa=True asks for a second
    before the channel's token is given."""
    trust = ssl.create_default_context(cafile=block.env["SSL_CERT_FILE"])
    async with httpx2.AsyncClient(timeout=30, verify=trust) as http:
        metadata = await http.get(f"{block.api_url}/auth/sso/saml/metadata")
        assert metadata.status_code == 200, metadata.text
        registered = await http.post("https://sso.company.com/sp", content=metadata.text.encode())
        assert registered.status_code == 204
        query: dict[str, str] = {"channel": channel.value}
        if channel is Channel.CLI:
            query |= {"return_to": LOOPBACK_RETURN, "code_challenge": CHALLENGE}
        start = await http.get(f"{block.api_url}/auth/sso/saml/start?{urlencode(query)}")
        assert start.status_code == 302, start.text
        assert start.headers["location"].startswith("https://sso.company.com/sso?")
        answer = await http.get(f"{start.headers['location']}&{urlencode({'user': 'bob'})}")
        assert answer.status_code == 200, answer.text
        form = {name: html.unescape(value) for name, value in FORM_FIELD.findall(answer.text)}
        callback = await http.post(f"{block.api_url}/auth/sso/saml/callback", data=form)
        prefix = "/cli/v1" if channel is Channel.CLI else ""
        if channel is Channel.CLI:
            assert callback.status_code == 302, callback.text
            code = dict(parse_qsl(urlsplit(callback.headers["location"]).query))["code"]
            exchange = {"code": code, "code_verifier": VERIFIER}
            callback = await http.post(f"{block.api_url}{prefix}/auth/sso/exchange", json=exchange)
        assert callback.status_code == 401, callback.text
        assert callback.json()["code"] == "mfa_enrollment_required"
        challenge = callback.json()["challenge_id"]
        enroll = {"challenge_id": challenge, "method": "totp"}
        enrolled = await http.post(f"{block.api_url}{prefix}/auth/mfa/enroll", json=enroll)
        assert enrolled.status_code == 200, enrolled.text
        activate = {"challenge_id": challenge, "code": pyotp.TOTP(enrolled.json()["secret"]).now()}
        grant = await http.post(f"{block.api_url}{prefix}/auth/mfa/activate", json=activate)
    assert grant.status_code == 200, grant.text
    assert grant.json()["user"]["id"].startswith("saml:"), grant.json()
    token = grant.json()["access_token"]
    listing = await _client(block, channel, token).list_workflows()
    assert listing.ok, listing


async def test_an_api_key_works_on_every_channel(block: Block, channel: Channel) -> None:
    """enable_api_keys=True; a wrong key is refused on each channel."""
    client = client_for(channel, block.api_url, block.mcp_url, block.admin_key)
    listing = await client.list_workflows()
    assert listing.ok, listing
    forged = _client(block, channel, "nx_forged.key")
    refused = await forged.list_workflows()
    assert refused.outcome is Outcome.UNAUTHENTICATED, refused


async def test_the_rate_limit_of_1000_per_minute_holds_across_every_channel(
    block: Block, channel: Channel
) -> None:
    """rate_limit=1000: a principal's 1000 calls in a minute, made over REST, leave none for it on
    any channel, whose refusal says when to retry."""
    headers = {"authorization": f"Bearer {block.admin_key}"}
    async with httpx2.AsyncClient(base_url=block.api_url, timeout=30) as http:
        gate = asyncio.Semaphore(16)

        async def call() -> int:
            async with gate:
                return (await http.get("/workflows", headers=headers)).status_code

        answers = await asyncio.gather(*(call() for _ in range(1000)))
    assert answers.count(200) == 1000, {code: answers.count(code) for code in set(answers)}
    client = client_for(channel, block.api_url, block.mcp_url, block.admin_key)
    refused = await client.list_workflows()
    assert refused.outcome is Outcome.RATE_LIMITED, refused
    assert refused.retry_after is not None, refused
    assert 0 < refused.retry_after <= 60, refused


async def test_the_metrics_port_serves_prometheus_text_to_an_authorized_scraper(
    block: Block,
) -> None:
    """PrometheusMonitoring(metrics_port=9090): the exposition is on 9090, authorized like /metrics."""
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{METRICS}", timeout=30) as http:
        anonymous = await http.get("/metrics")
        scraped = await http.get("/metrics", headers={"authorization": f"Bearer {block.admin_key}"})
        elsewhere = await http.get("/workflows", headers={"authorization": f"Bearer {block.admin_key}"})
    assert anonymous.status_code == 401
    assert scraped.status_code == 200, scraped.text
    assert "nexus_channel_requests_total" in scraped.text
    assert elsewhere.status_code == 404


async def test_strict_multi_tenancy_gives_a_new_tenant_its_own_role_and_schema(block: Block) -> None:
    """multi_tenant=True, tenant_isolation="strict": a tenant made through the API gets a
    PostgreSQL role and a schema of its own, which other roles cannot use."""
    headers = {"authorization": f"Bearer {block.admin_key}"}
    async with httpx2.AsyncClient(base_url=block.api_url, timeout=30) as http:
        made = await http.post(
            "/admin/tenants",
            json={"tenant_id": "acme", "name": "Acme", "config": {"cli_prefix": "acme"}},
            headers=headers,
        )
    assert made.status_code in (200, 201), made.text
    connection = await asyncpg.connect(block.env["NEXUS_STATE_URL"])
    try:
        owner = await connection.fetchval(
            "SELECT schema_owner FROM information_schema.schemata WHERE schema_name = 'acme'"
        )
        public_usage = await connection.fetchval("SELECT has_schema_privilege('public', 'acme', 'USAGE')")
    finally:
        await connection.close()
    assert owner == "nexus_tenant_acme"
    assert public_usage is False


async def test_each_call_is_a_span_in_the_callers_trace_and_one_json_log_line(
    block: Block, receiver: OtlpReceiver, channel: Channel
) -> None:
    """enable_traces=True and enable_logs=True, on every channel: the call joins the caller's W3C
    trace and is exported to the collector; its log line carries the trace id and no secret."""
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    client = client_for(
        channel, block.api_url, block.mcp_url, block.admin_key, trace_parent=f"00-{trace_id}-{parent}-01"
    )
    listing = await client.list_workflows()
    assert listing.ok, listing
    spans = receiver.wait_for(lambda got: any(s.trace_id == trace_id for s in got))
    span = next(s for s in spans if s.trace_id == trace_id)
    assert span.parent_span_id == parent
    assert span.attributes["nexus.channel"] == channel.value
    assert span.attributes["nexus.outcome"] == "success"
    deadline = time.monotonic() + 15
    while not (lines := _call_lines(block, trace_id)):
        assert time.monotonic() < deadline, block.lines()[-20:]
        await asyncio.sleep(0.1)
    (line,) = lines
    assert (line["channel"], line["outcome"], line["span_id"]) == (channel.value, "success", span.span_id)
    assert block.admin_key not in block.log.read_text(errors="replace")


def _call_lines(block: Block, trace_id: str) -> list[dict[str, Any]]:
    found = []
    for text in block.lines():
        if text.startswith("{"):
            line = json.loads(text)
            if line.get("event") == "call" and line.get("trace_id") == trace_id:
                found.append(line)
    return found


async def test_health_detail_on_every_channel_lists_this_node_heartbeating_every_30_seconds(
    block: Block, channel: Channel
) -> None:
    """enable_clustering=True, health_check_interval=30: the node announces itself in the shared
    Redis and stays listed for three intervals past its last heartbeat."""
    reply = await _client(block, channel, block.admin_key).health()
    assert reply.ok, reply
    cluster = reply.body["cluster"]
    [node] = [node for node in cluster["nodes"] if node["id"] == cluster["node_id"]]
    assert node["ready"] is True
    assert node["api"].endswith(f":{API}"), node
    database = urlsplit(block.env["NEXUS_STATE_URL"]).path.lstrip("/")
    store = redis.Redis.from_url(block.env["NEXUS_REDIS_URL"])
    expiry_ms = store.zscore(f"nexus:cluster:{database}:expiry", cluster["node_id"])
    seconds, micros = store.time()
    left_s = (float(expiry_ms or 0) - (seconds * 1000 + micros / 1000)) / 1000
    assert 2 * 30 - 1 < left_s <= 3 * 30, left_s


async def test_the_audit_trail_keeps_seven_years_and_shows_a_tampered_record(block: Block) -> None:
    """compliance_mode="enterprise" with audit_log_retention=2557: at start the block purged the
    record older than seven years and kept the younger one (HIPAA's six would not have); every
    record is chained, and a record changed in the database afterwards is found."""
    connection = await asyncpg.connect(block.env["NEXUS_STATE_URL"])
    try:
        deadline = time.monotonic() + 15
        while await connection.fetchval(
            "SELECT count(*) FROM audit_records WHERE request_id = 'beyond-seven-years'"
        ):
            assert time.monotonic() < deadline, "the record older than the retention is still there"
            await asyncio.sleep(0.1)
        kept = await connection.fetchval(
            "SELECT count(*) FROM audit_records WHERE request_id = 'within-seven-years'"
        )
        assert kept == 1
        listing = await _client(block, Channel.API, block.admin_key).list_workflows()
        assert listing.ok, listing
        reader = Nexus(enable_auth=True, state_url=block.env["NEXUS_STATE_URL"])
        deadline = time.monotonic() + 15
        while (verified := await reader.verify_audit_log()).checked < 2:  # the kept record and the call
            assert time.monotonic() < deadline, verified
            await asyncio.sleep(0.1)
        assert verified.intact, verified
        seq = await connection.fetchval(
            "SELECT seq FROM audit_records WHERE request_id = 'within-seven-years'"
        )
        await connection.execute("UPDATE audit_records SET outcome = 'forbidden' WHERE seq = $1", seq)
    finally:
        await connection.close()
    tampered = await reader.verify_audit_log()
    assert not tampered.intact
    assert tampered.broken_seq == seq, tampered


async def test_under_gdpr_the_telemetry_names_nobody_while_the_audit_does(
    block: Block, receiver: OtlpReceiver
) -> None:
    """compliance_mode="enterprise" includes GDPR: log lines and spans carry pseudonyms of the
    principal and the client address; the audit record names them."""
    trace_id = secrets.token_hex(16)
    traced = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    client = client_for(Channel.API, block.api_url, block.mcp_url, block.admin_key, trace_parent=traced)
    assert (await client.list_workflows()).ok
    [span] = [
        s
        for s in receiver.wait_for(lambda got: any(s.trace_id == trace_id for s in got))
        if s.trace_id == trace_id
    ]
    deadline = time.monotonic() + 15
    while not (lines := _call_lines(block, trace_id)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    [line] = lines
    reader = Nexus(enable_auth=True, state_url=block.env["NEXUS_STATE_URL"])
    [record] = [r for r in await reader.audit_log(limit=50) if r.request_id == line["request_id"]]
    assert record.principal_id.startswith("key:")
    for shown in (
        line["principal"],
        line["client"],
        span.attributes["enduser.id"],
        span.attributes["client.address"],
    ):
        assert shown.startswith("p:"), shown
    text = block.log.read_text(errors="replace")
    assert record.principal_id not in text
