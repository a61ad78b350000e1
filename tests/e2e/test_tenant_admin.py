"""Tenant administration as an operator does it: the admin REST API and the real `nexus tenants`
command against a served app with tenants (moderate isolation on SQLite). Every operation is
audited with the tenant it acted on; a suspended tenant is refused on REST and the CLI until it is
resumed; tenants' own credentials never administer tenants; logins are cached per tenant."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx2
import pytest
from tests.e2e.conftest import build_app

from nexus import RunningNexus
from nexus.channels.cli.credentials import CredentialStore, login_key
from nexus.core.types import AuditRecord, Outcome
from nexus.enterprise.auth import RBACManager
from nexus.enterprise.tenancy import TenantManager
from nexus.workflow.builder import WorkflowBuilder

PASSWORD = "correct horse battery"  # a test user's password
BASE_DOMAIN = "api.test"
ROLES = {
    "platform_admin": ["*:*:tenants"],
    "tenant_reader": ["*:read:tenants"],
    "member": ["*:*:*"],  # everything a tenant's own administrator could be given
}
MEMBER_TENANT = "initech"  # exists from the start; its member key and user belong to it
AUDIT = "_tenants"


@dataclass
class Served:
    server: RunningNexus
    keys: dict[str, str]
    key_ids: dict[str, str]
    config: Path

    @property
    def url(self) -> str:
        return self.server.api_url

    def audit(self, limit: int = 1000) -> list[AuditRecord]:
        return asyncio.run(self.server.app.audit_log(workflow=AUDIT, limit=limit))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("tenant-admin")
    app = build_app(f"sqlite:///{root}/state.db", enable_auth=True)
    app.tenancy.manager = TenantManager(isolation_level="moderate")
    app.tenancy.base_domain = BASE_DOMAIN
    app.tenancy.routing = {"api": "subdomain", "cli": "prefix", "mcp": "port_offset"}
    app.auth.password_time_cost = 1
    app.auth.password_memory_kib = 1024
    rbac = RBACManager()
    for role, permissions in ROLES.items():
        rbac.create_role(role, permissions)
    app.set_rbac_manager(rbac)
    add = WorkflowBuilder()
    add.add_input("a", int)
    add.add_input("b", int)
    add.add_node("PythonCodeNode", "add", {"code": "result = a + b"})
    app.register("tenant_add", add.build(), tenant_scoped=True)

    async def prepare() -> dict[str, Any]:
        config = {"api_subdomain": MEMBER_TENANT, "cli_prefix": MEMBER_TENANT}
        await app.create_tenant(MEMBER_TENANT, "Initech", config)
        await app.create_user("root", PASSWORD, roles=["platform_admin"])
        await app.create_user("ann", PASSWORD, roles=["member"], tenants=[MEMBER_TENANT])
        return {
            "admin": await app.create_api_key("admin", roles=["platform_admin"]),
            "reader": await app.create_api_key("reader", roles=["tenant_reader"]),
            "member": await app.create_api_key("member", roles=["member"], tenants=[MEMBER_TENANT]),
            # A member of the tenants the lifecycle tests create (ids are only checked, not looked up).
            "caller": await app.create_api_key("caller", roles=["member"], tenants=["lc_api", "lc_cli"]),
        }

    issued = asyncio.run(prepare())
    server = app.start_in_thread()
    try:
        yield Served(
            server,
            {name: key.plaintext for name, key in issued.items()},
            {name: key.key.key_id for name, key in issued.items()},
            root / "config",
        )
    finally:
        server.stop()


# -- the two ways in ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A call's outcome: the document (or problem document), and the HTTP status or exit code."""

    ok: bool
    status: int
    document: dict[str, Any]

    @property
    def code(self) -> str | None:
        return None if self.ok else self.document.get("code")


class AdminChannel(Protocol):
    name: str

    def create(self, tenant_id: str, name: str, config: dict[str, Any], *, key: str = "admin") -> Answer: ...
    def list(self, *, key: str = "admin") -> Answer: ...
    def show(self, tenant_id: str, *, key: str = "admin") -> Answer: ...
    def suspend(self, tenant_id: str, *, key: str = "admin") -> Answer: ...
    def resume(self, tenant_id: str, *, key: str = "admin") -> Answer: ...
    def delete(self, tenant_id: str, *, key: str = "admin") -> Answer: ...


@dataclass
class Rest:
    """`/admin/tenants` on the API port, on the platform's host or (`host`) a tenant's."""

    served: Served
    host: str | None = None
    name: str = "api"

    def call(self, method: str, path: str, key: str, body: Any = None) -> Answer:
        headers = {"authorization": f"Bearer {self.served.keys[key]}"}
        if self.host is not None:
            headers["host"] = self.host
        answer = httpx2.request(
            method, f"{self.served.url}/admin/tenants{path}", json=body, headers=headers, timeout=30
        )
        return Answer(answer.is_success, answer.status_code, answer.json())

    def create(self, tenant_id: str, name: str, config: dict[str, Any], *, key: str = "admin") -> Answer:
        return self.call("POST", "", key, {"tenant_id": tenant_id, "name": name, "config": config})

    def list(self, *, key: str = "admin") -> Answer:
        return self.call("GET", "", key)

    def show(self, tenant_id: str, *, key: str = "admin") -> Answer:
        return self.call("GET", f"/{tenant_id}", key)

    def suspend(self, tenant_id: str, *, key: str = "admin") -> Answer:
        return self.call("POST", f"/{tenant_id}/suspend", key)

    def resume(self, tenant_id: str, *, key: str = "admin") -> Answer:
        return self.call("POST", f"/{tenant_id}/resume", key)

    def delete(self, tenant_id: str, *, key: str = "admin") -> Answer:
        return self.call("DELETE", f"/{tenant_id}", key)


@dataclass
class Cli:
    """The real `nexus` console script, `--json` output, the key in NEXUS_TOKEN."""

    served: Served
    tenant: str | None = None
    name: str = "cli"

    def run(
        self, *args: str, key: str | None = "admin", stdin: str = "", extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
        env.update(extra or {})
        env["NEXUS_CONFIG_DIR"] = str(self.served.config)
        if key is not None:
            env["NEXUS_TOKEN"] = self.served.keys[key]
        on_tenant = ("--tenant", self.tenant) if self.tenant is not None else ()
        return subprocess.run(  # noqa: S603  # our own interpreter and console script
            [sys.executable, "-m", "nexus", "--url", self.served.url, *on_tenant, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    def call(self, *args: str, key: str = "admin") -> Answer:
        done = self.run("tenants", *args, "--json", key=key)
        ok = done.returncode == 0
        document = json.loads(done.stdout if ok else done.stderr)
        return Answer(ok, done.returncode, document)

    def create(self, tenant_id: str, name: str, config: dict[str, Any], *, key: str = "admin") -> Answer:
        settings = [part for k, v in config.items() for part in ("--config", f"{k}={v}")]
        return self.call("create", tenant_id, "--name", name, *settings, key=key)

    def list(self, *, key: str = "admin") -> Answer:
        return self.call("list", key=key)

    def show(self, tenant_id: str, *, key: str = "admin") -> Answer:
        return self.call("show", tenant_id, key=key)

    def suspend(self, tenant_id: str, *, key: str = "admin") -> Answer:
        return self.call("suspend", tenant_id, key=key)

    def resume(self, tenant_id: str, *, key: str = "admin") -> Answer:
        return self.call("resume", tenant_id, key=key)

    def delete(self, tenant_id: str, *, key: str = "admin") -> Answer:
        return self.call("delete", tenant_id, "--yes", key=key)


@pytest.fixture(params=["api", "cli"])
def admin(request: pytest.FixtureRequest, served: Served) -> AdminChannel:
    return Rest(served) if request.param == "api" else Cli(served)


def tenant_call_over_rest(served: Served, subdomain: str) -> Answer:
    answer = httpx2.post(
        f"{served.url}/workflows/tenant_add/execute",
        json={"inputs": {"a": 1, "b": 2}},
        headers={"authorization": f"Bearer {served.keys['caller']}", "host": f"{subdomain}.{BASE_DOMAIN}"},
        timeout=30,
    )
    return Answer(answer.is_success, answer.status_code, answer.json())


def tenant_call_over_cli(served: Served, prefix: str) -> Answer:
    done = Cli(served, tenant=prefix).run(
        "run", "tenant_add", "-p", "a=1", "-p", "b=2", "--json", key="caller"
    )
    ok = done.returncode == 0
    return Answer(ok, done.returncode, json.loads(done.stdout if ok else done.stderr))


def records_for(served: Served, channel: str, tenant_id: str) -> list[AuditRecord]:
    """The admin calls over `channel` that name `tenant_id`, oldest first."""
    return [
        record
        for record in reversed(served.audit())
        if record.channel.value == channel and f"tenant {tenant_id}" in record.reason
    ]


# -- every operation, on each channel ---------------------------------------------------------------


def test_a_tenant_is_created_listed_shown_suspended_resumed_and_deleted(
    admin: AdminChannel, served: Served
) -> None:
    tenant_id = f"lc_{admin.name}"
    route = f"lc-{admin.name}"
    config = {"api_subdomain": route, "cli_prefix": route, "quota_profile": "standard"}

    created = admin.create(tenant_id, "Lifecycle Ltd", config)
    assert created.ok, created.document
    assert created.status == (201 if admin.name == "api" else 0)
    assert created.document["tenant_id"] == tenant_id
    assert created.document["name"] == "Lifecycle Ltd"
    assert created.document["status"] == "active"
    assert created.document["suspended_at"] is None
    assert created.document["config"] == config

    listed = admin.list()
    assert listed.ok, listed.document
    ids = [tenant["tenant_id"] for tenant in listed.document["tenants"]]
    assert tenant_id in ids
    assert MEMBER_TENANT in ids

    shown = admin.show(tenant_id)
    assert shown.ok, shown.document
    assert shown.document["usage"] == {"concurrent_workflows": 0, "cli_sessions": 0}
    assert shown.document["quota"]["profile"] == "standard"
    assert shown.document["quota"]["limits"]["api_requests_per_hour"] == 1000
    assert shown.document["quota"]["limits"]["concurrent_workflows"] == 10

    assert tenant_call_over_rest(served, route).document["outputs"] == {"add": {"result": 3}}
    assert tenant_call_over_cli(served, route).ok

    suspended = admin.suspend(tenant_id)
    assert suspended.ok, suspended.document
    assert suspended.document["status"] == "suspended"
    assert suspended.document["suspended_at"] is not None
    refused_rest = tenant_call_over_rest(served, route)
    assert (refused_rest.status, refused_rest.code) == (403, "tenant_suspended")
    refused_cli = tenant_call_over_cli(served, route)
    assert (refused_cli.status, refused_cli.code) == (77, "tenant_suspended")

    resumed = admin.resume(tenant_id)
    assert resumed.ok, resumed.document
    assert (resumed.document["status"], resumed.document["suspended_at"]) == ("active", None)
    assert tenant_call_over_rest(served, route).ok
    assert tenant_call_over_cli(served, route).ok

    deleted = admin.delete(tenant_id)
    assert deleted.ok, deleted.document
    assert deleted.document["tenant_id"] == tenant_id
    assert deleted.document["deleted"] is True
    gone = admin.show(tenant_id)
    assert (gone.status, gone.code) == ((404 if admin.name == "api" else 2), "tenant_not_found")
    assert tenant_call_over_rest(served, route).code == "tenant_not_found"

    records = records_for(served, admin.name, tenant_id)
    assert [(str(r.action), r.outcome) for r in records] == [
        ("create", Outcome.SUCCESS),
        ("read", Outcome.SUCCESS),
        ("suspend", Outcome.SUCCESS),
        ("resume", Outcome.SUCCESS),
        ("delete", Outcome.SUCCESS),
    ]
    assert [r.reason.rsplit("; ", 1)[-1] for r in records] == [
        f"created tenant {tenant_id}",
        f"read tenant {tenant_id}",
        f"suspended tenant {tenant_id}",
        f"resumed tenant {tenant_id}",
        f"deleted tenant {tenant_id}",
    ]
    assert {r.principal_id for r in records} == {f"key:{served.key_ids['admin']}"}
    assert all(r.tenant_id is None for r in records)  # done on the platform's route
    listings = [
        r
        for r in served.audit()
        if r.channel.value == admin.name and r.reason.endswith("tenant(s)") and r.outcome is Outcome.SUCCESS
    ]
    assert listings, "the listing was not audited"


def test_an_unknown_tenant_is_not_found_for_every_operation(admin: AdminChannel) -> None:
    not_found = 404 if admin.name == "api" else 2
    for answer in (
        admin.show("nobody"),
        admin.suspend("nobody"),
        admin.resume("nobody"),
        admin.delete("nobody"),
        admin.show("Not-An-Id"),
    ):
        assert (answer.status, answer.code) == (not_found, "tenant_not_found"), answer.document


def test_bad_settings_and_taken_routes_are_refused_with_the_reason(admin: AdminChannel) -> None:
    invalid = 422 if admin.name == "api" else 2
    unknown = admin.create(f"bad_{admin.name}", "Bad", {"colour": "blue"})
    assert (unknown.status, unknown.code) == (invalid, "invalid_input")
    assert "Unknown tenant config key(s) ['colour']" in unknown.document["detail"]

    conflict = 409 if admin.name == "api" else 65
    taken = admin.create(f"dup_{admin.name}", "Dup", {"cli_prefix": MEMBER_TENANT})
    assert (taken.status, taken.code) == (conflict, "tenant_conflict")
    assert f"The cli_prefix '{MEMBER_TENANT}' is already another tenant's." in taken.document["detail"]

    again = admin.create(MEMBER_TENANT, "Initech again", {})
    assert (again.status, again.code) == (conflict, "tenant_conflict")
    assert f"A tenant with id '{MEMBER_TENANT}' already exists." in again.document["detail"]
    assert not admin.show(f"bad_{admin.name}").ok


def test_a_role_that_may_only_read_tenants_cannot_change_them(admin: AdminChannel, served: Served) -> None:
    assert admin.list(key="reader").ok
    assert admin.show(MEMBER_TENANT, key="reader").ok
    forbidden = 403 if admin.name == "api" else 77
    for answer in (
        admin.create(f"nope_{admin.name}", "Nope", {}, key="reader"),
        admin.suspend(MEMBER_TENANT, key="reader"),
        admin.delete(MEMBER_TENANT, key="reader"),
    ):
        assert (answer.status, answer.code) == (forbidden, "forbidden"), answer.document
    assert admin.show(MEMBER_TENANT).document["status"] == "active"
    refusals = [
        r
        for r in served.audit()
        if r.principal_id == f"key:{served.key_ids['reader']}"
        and r.channel.value == admin.name
        and r.outcome is Outcome.FORBIDDEN
    ]
    assert sorted(str(r.action) for r in refusals) == ["create", "delete", "suspend"]


def test_a_tenant_members_key_is_refused_on_the_admin_routes(served: Served) -> None:
    member = f"key:{served.key_ids['member']}"
    platform_rest = Rest(served).list(key="member")
    assert (platform_rest.status, platform_rest.code) == (404, "tenant_not_found")
    own_host = Rest(served, host=f"{MEMBER_TENANT}.{BASE_DOMAIN}")
    for answer in (own_host.list(key="member"), own_host.suspend(MEMBER_TENANT, key="member")):
        assert (answer.status, answer.code) == (403, "forbidden"), answer.document
    assert "platform's route" in own_host.list(key="member").document["detail"]

    platform_cli = Cli(served).list(key="member")
    assert (platform_cli.status, platform_cli.code) == (2, "tenant_not_found")
    own_prefix = Cli(served, tenant=MEMBER_TENANT)
    for answer in (own_prefix.list(key="member"), own_prefix.delete(MEMBER_TENANT, key="member")):
        assert (answer.status, answer.code) == (77, "forbidden"), answer.document

    # The platform's own key is no better on a tenant's route: not found there.
    on_tenant = Rest(served, host=f"{MEMBER_TENANT}.{BASE_DOMAIN}").list()
    assert (on_tenant.status, on_tenant.code) == (404, "tenant_not_found")

    assert Rest(served).show(MEMBER_TENANT).document["status"] == "active"
    refused = [r for r in served.audit() if r.principal_id == member]
    assert len(refused) == 7
    assert {r.outcome for r in refused} == {Outcome.NOT_FOUND, Outcome.FORBIDDEN}
    assert {r.tenant_id for r in refused if r.outcome is Outcome.FORBIDDEN} == {MEMBER_TENANT}


def test_create_takes_the_typed_options_and_refuses_unknown_body_fields(served: Served) -> None:
    cli = Cli(served)
    with socket.socket() as probe:  # a port nothing else holds: the tenant's MCP listener opens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = cli.run(
        "tenants",
        "create",
        "typed_cli",
        "--name",
        "Typed",
        "--api-subdomain",
        "typed",
        "--cli-prefix",
        "typed",
        "--mcp-port",
        str(port),
        "--quota-profile",
        "enterprise_large",
        "--compliance-level",
        "hipaa_sox",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["config"] == {
        "api_subdomain": "typed",
        "cli_prefix": "typed",
        "mcp_port": port,
        "quota_profile": "enterprise_large",
        "compliance_level": "hipaa_sox",
    }
    text = cli.run("tenants", "show", "typed_cli")
    assert text.returncode == 0, text.stderr
    assert "Tenant: typed_cli" in text.stdout
    assert "Quota profile: enterprise_large" in text.stdout
    assert "concurrent_workflows" in text.stdout
    table = cli.run("tenants", "list")
    assert table.returncode == 0, table.stderr
    assert "typed_cli" in table.stdout

    rest = Rest(served)
    extra = rest.call("POST", "", "admin", {"tenant_id": "extra", "name": "Extra", "owner": "me"})
    assert (extra.status, extra.code) == (422, "invalid_input")
    assert "Unknown field(s) ['owner']" in extra.document["detail"]
    missing = rest.call("POST", "", "admin", {"name": "No id"})
    assert (missing.status, missing.code) == (422, "invalid_input")
    assert not rest.show("extra").ok

    assert rest.delete("typed_cli").ok


def test_delete_asks_for_confirmation_unless_told_yes(served: Served) -> None:
    rest = Rest(served)
    assert rest.create("keep_me", "Keep me", {}).ok
    done = Cli(served).run("tenants", "delete", "keep_me")
    assert done.returncode == 2
    assert "give --yes" in done.stderr
    assert rest.show("keep_me").ok
    gone = Cli(served).run("tenants", "delete", "keep_me", "--yes")
    assert gone.returncode == 0, gone.stderr
    assert "Deleted tenant keep_me." in gone.stdout
    assert not rest.show("keep_me").ok


def test_a_tenant_login_and_a_platform_login_are_cached_apart(served: Served) -> None:
    platform, tenant = Cli(served), Cli(served, tenant=MEMBER_TENANT)
    for cli, user in ((platform, "root"), (tenant, "ann")):
        done = cli.run("login", "--username", user, "--password-stdin", key=None, stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr

    store = CredentialStore(served.config)
    assert store.load(served.url) is not None
    assert store.load(served.url).username == "root"  # type: ignore[union-attr]
    assert store.load(served.url, tenant=MEMBER_TENANT).username == "ann"  # type: ignore[union-attr]
    servers = json.loads((served.config / "credentials.json").read_text())["servers"]
    assert set(servers) >= {login_key(served.url), login_key(served.url, MEMBER_TENANT)}

    assert json.loads(platform.run("whoami", "--json", key=None).stdout)["username"] == "root"
    assert json.loads(tenant.run("whoami", "--json", key=None).stdout)["username"] == "ann"
    by_variable = platform.run("whoami", "--json", key=None, extra={"NEXUS_TENANT": MEMBER_TENANT})
    assert json.loads(by_variable.stdout)["username"] == "ann"
    assert platform.run("tenants", "list", "--json", key=None).returncode == 0
    refused = tenant.run("tenants", "list", "--json", key=None)
    assert refused.returncode == 77
    assert json.loads(refused.stderr)["code"] == "forbidden"

    out = tenant.run("logout", key=None)
    assert out.returncode == 0, out.stderr
    assert f"(tenant {MEMBER_TENANT})" in out.stdout
    assert store.load(served.url, tenant=MEMBER_TENANT) is None
    assert store.load(served.url) is not None
