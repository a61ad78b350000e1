"""The source document's blocks, run as written (with `kailash.` replaced by `nexus.`).

The blocks are copied under tests/spec/; when the document is beside the project, a test checks
each copy still equals its block. Blocks that call `app.start()` run in a subprocess on the
ports they name, and the test drives the served app from outside.
"""

from __future__ import annotations

import hashlib
import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pyotp
import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC_DOC = ROOT.parent / "shared" / "spec" / "enterprise-nexus-patterns.md"
# Each copy, the heading of its block in the document, and the SHA-256 of the block as copied.
COPIES = {
    # Run against the real slapd, SAML IdP, PostgreSQL and Redis by test_spec_production.py.
    "production_deployment.py": (
        "### Production Deployment Pattern",
        "0bc2e22d0a3f2c6974f95c9640dd75d653c82b39e488969f1b5027eb62ae5e5e",
    ),
    "mfa_across_channels.py": (
        "### Multi-Factor Authentication Across Channels",
        "11943c86b3cbd72f94c96ca43fb50056337d7849708474ca0346471da68b14ea",
    ),
    # Run with `nexus` bound to an app; tests/e2e/test_authorization.py checks their rules on
    # every channel against an oracle.
    "rbac.py": (
        "### Role-Based Access Control (RBAC)",
        "0f50e313177e768e487f7bf645c6c04ac90ff827a5bd8e70783420866db6b739",
    ),
    "abac.py": (
        "### Attribute-Based Access Control (ABAC)",
        "1fdd139045d4304ec70630440c2c053ca2b2ddacf18335ace969458fb4bb0cd8",
    ),
    # Run against the real PostgreSQL by tests/integration/test_spec_tenancy.py.
    "tenant_isolation.py": (
        "### Tenant Isolation Configuration",
        "c04a4072993ef4fcbd595952c7e92ad73ac44a04753a85f7d03b12c47e512b9a",
    ),
    "tenant_aware_workflows.py": (
        "### Tenant-Aware Workflows",
        "e7bdaf0c3b3968e311ed518e4060e061dac2fab4921cf3d79743533c22b11f69",
    ),
}


def _block(heading: str) -> str:
    text = SPEC_DOC.read_text()
    section = text[text.index(heading) :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)].replace("kailash.", "nexus.")


@pytest.mark.parametrize("name", sorted(COPIES))
def test_each_copy_equals_its_block_in_the_source_document(name: str) -> None:
    """The copy is the block as recorded; where the document is beside the checkout (it is not in
    every clone), the block there still reads the same."""
    heading, digest = COPIES[name]
    copy = (ROOT / "tests" / "spec" / name).read_text()
    assert hashlib.sha256(copy.encode()).hexdigest() == digest
    if SPEC_DOC.exists():
        assert copy == _block(heading)


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def mfa_block(tmp_path: Path) -> Iterator[str]:
    """The MFA block served from `tmp_path` (its ./nexus.db), with users made beforehand."""
    for port in (8000, 3000):
        if _answers(port):
            pytest.fail(f"port {port}, which the block serves on, is taken by another process")
    setup = (
        "import asyncio\n"
        "from nexus import Nexus\n"
        "app = Nexus(enable_auth=True)\n"
        "async def main():\n"
        "    await app.create_user('alice', 'alice-password-1', roles=['developer'])\n"
        "    await app.create_user('robot', 'robot-password-1', roles=['automated'])\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-c", setup], cwd=tmp_path, check=True, env=env, timeout=60)  # noqa: S603
    block = ROOT / "tests" / "spec" / "mfa_across_channels.py"
    log = (tmp_path / "block.log").open("wb")
    process = subprocess.Popen([sys.executable, str(block)], cwd=tmp_path, env=env, stdout=log, stderr=log)  # noqa: S603
    try:
        deadline = time.monotonic() + 60
        while not (_answers(8000) and _answers(3000)):
            assert process.poll() is None, (tmp_path / "block.log").read_text()
            assert time.monotonic() < deadline, "the block did not start serving within 60 s"
            time.sleep(0.1)
        yield "http://127.0.0.1:8000"
    finally:
        process.send_signal(signal.SIGINT)  # the block's app.start() stops cleanly on Ctrl-C
        try:
            assert process.wait(timeout=30) == 0, (tmp_path / "block.log").read_text()
        finally:
            if process.poll() is None:
                process.kill()
            log.close()


def test_the_mfa_block_enforces_its_settings_on_every_channel(mfa_block: str) -> None:
    with httpx2.Client(base_url=mfa_block, timeout=30) as http:
        # required_for api/cli/mcp and methods totp/sms/hardware_key: a second factor is due.
        first = http.post("/auth/login", json={"username": "alice", "password": "alice-password-1"})
        assert first.status_code == 401
        assert first.json()["code"] == "mfa_enrollment_required"
        assert first.json()["methods"] == ["hardware_key", "sms", "totp"]
        challenge = first.json()["challenge_id"]
        enrolled = http.post("/auth/mfa/enroll", json={"challenge_id": challenge, "method": "totp"})
        code = pyotp.TOTP(enrolled.json()["secret"]).now()
        grant = http.post("/auth/mfa/activate", json={"challenge_id": challenge, "code": code}).json()
        # session_duration = 28800: the session lasts eight hours.
        ends = datetime.fromisoformat(grant["session_expires_at"])
        assert abs((ends - datetime.now(UTC)).total_seconds() - 28800) < 60
        # cross_channel_sso + session_binding: the CLI and MCP tokens need no second MFA.
        session = {"authorization": f"Bearer {grant['session_token']}"}
        tokens = {}
        for channel in ("cli", "mcp"):
            token = http.post("/auth/token", json={"channel": channel}, headers=session)
            assert token.status_code == 200, token.text
            tokens[channel] = token.json()["access_token"]
        on_cli = http.get("/cli/v1/workflows", headers={"authorization": f"Bearer {tokens['cli']}"})
        assert on_cli.status_code == 200, on_cli.text
        # The MFA-bound session answers for every channel; an API token is refused on MCP.
        mcp = httpx2.post(
            "http://127.0.0.1:3000/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={
                "authorization": f"Bearer {grant['access_token']}",
                "accept": "application/json, text/event-stream",
            },
            timeout=30,
        )
        assert mcp.status_code == 401
        assert re.search(
            r'resource_metadata="[^"]+/.well-known/oauth-protected-resource/mcp"',
            mcp.headers["www-authenticate"],
        )
        # bypass_roles: "automated" logs in without a second factor.
        robot = http.post("/auth/login", json={"username": "robot", "password": "robot-password-1"})
        assert robot.status_code == 200, robot.text


def test_the_rbac_and_abac_blocks_run_against_an_app_and_install_what_they_say(tmp_path: Path) -> None:
    from nexus import Nexus

    app = Nexus(enable_auth=True, state_url=f"sqlite:///{tmp_path}/state.db")
    rbac = runpy.run_path(str(ROOT / "tests" / "spec" / "rbac.py"), init_globals={"nexus": app})["rbac"]
    abac = runpy.run_path(str(ROOT / "tests" / "spec" / "abac.py"), init_globals={"nexus": app})["abac"]
    assert app._authz.rbac is rbac
    assert app._authz.abac is abac
    roles = {role.name: [p.text for p in role.permissions] for role in rbac.roles()}
    assert roles["operator"] == [
        "api:read:health",
        "api:execute:monitoring_workflows",
        "cli:execute:status",
        "cli:execute:deploy",
        "mcp:execute:system_tools",
    ]
    assert sorted(roles) == ["developer", "executive", "operator"]
    policies = {p.name: p for p in abac.policies.all()}
    assert policies["business_hours_only"].condition.paths == {"env.current_time"}
    assert policies["location_restricted"].channels == {"mcp"}
    assert policies["data_access_control"].resources == {"classified_workflows"}
