"""The CLI's tenant pieces without a server: `--tenant` and its header, the login cache keyed by
server and tenant, `nexus tenants create`'s settings, the client's admin calls, and the body the
server's create route accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.unit.channels.test_cli_credentials import FakeServer, login_for
from tests.unit.channels.test_cli_startup import HEAVY, PROBE
from typer.testing import CliRunner

from nexus.channels import asgi
from nexus.channels.cli import client as cli_client
from nexus.channels.cli.client import CliClient
from nexus.channels.cli.credentials import (
    CachedLogin,
    CredentialStore,
    login_key,
    normalize_url,
    not_logged_in,
    with_login_hint,
)
from nexus.channels.cli.problem import Failure
from nexus.channels.cli.tenants import tenant_config, tenant_prefix
from nexus.channels.tenants import creation_of, tenant_document
from nexus.console import app as cli
from nexus.core.tenancy.model import Tenant, TenantConfig, TenantStatus
from nexus.errors import InvalidInputError

URL = "http://127.0.0.1:8000"
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens on the discard port
runner = CliRunner()


# -- --tenant -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "sent"), [(None, None), ("", None), ("  ", None), (" acme ", "acme")])
def test_an_empty_tenant_names_the_platform_and_blanks_are_trimmed(
    given: str | None, sent: str | None
) -> None:
    assert tenant_prefix(given) == sent


@pytest.mark.parametrize("given", ["Acme", "two words", "ac\nme", "acmé", "-acme", "a" * 64, "a/b"])
def test_a_prefix_no_tenant_could_have_is_a_usage_error(given: str) -> None:
    with pytest.raises(Failure) as caught:
        tenant_prefix(given)
    assert caught.value.exit_code == 2
    assert caught.value.title == "Invalid tenant"


def test_a_bad_tenant_option_or_variable_stops_the_command_before_any_call() -> None:
    by_option = runner.invoke(cli, ["--url", UNREACHABLE, "--tenant", "Bad Prefix", "workflows", "list"])
    assert by_option.exit_code == 2
    assert "Invalid tenant" in by_option.stderr
    by_variable = runner.invoke(
        cli, ["--url", UNREACHABLE, "workflows", "list"], env={"NEXUS_TENANT": "UPPER", "NEXUS_TOKEN": "k"}
    )
    assert by_variable.exit_code == 2
    assert "'UPPER'" in by_variable.stderr


def test_the_client_header_is_the_one_the_server_reads() -> None:
    assert cli_client.TENANT_HEADER == asgi.TENANT_HEADER


def recording(seen: list[httpx2.Request], document: dict[str, Any] | None = None) -> httpx2.MockTransport:
    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=document if document is not None else {"tenants": []})

    return httpx2.MockTransport(answer)


def test_every_call_of_a_tenant_client_names_the_tenant_and_a_platform_client_names_none() -> None:
    seen: list[httpx2.Request] = []
    with CliClient(URL, token="k", transport=recording(seen), tenant="acme") as client:
        client.list_tenants()
        client.health()
        client.login("ann", "pw")
    assert [request.headers.get("x-nexus-tenant") for request in seen] == ["acme", "acme", "acme"]
    seen.clear()
    with CliClient(URL, token="k", transport=recording(seen)) as client:
        client.list_tenants()
    assert "x-nexus-tenant" not in seen[0].headers


def test_the_admin_calls_go_to_the_cli_channels_tenant_routes() -> None:
    seen: list[httpx2.Request] = []
    document = {"tenant_id": "a/b"}
    with CliClient(URL, token="k", transport=recording(seen, document)) as client:
        client.show_tenant("a/b")
        client.create_tenant("acme", "Acme", {"mcp_port": 3101})
        client.suspend_tenant("acme")
        client.resume_tenant("acme")
        client.delete_tenant("acme")
    assert [(r.method, r.url.raw_path) for r in seen] == [
        ("GET", b"/cli/v1/admin/tenants/a%2Fb"),
        ("POST", b"/cli/v1/admin/tenants"),
        ("POST", b"/cli/v1/admin/tenants/acme/suspend"),
        ("POST", b"/cli/v1/admin/tenants/acme/resume"),
        ("DELETE", b"/cli/v1/admin/tenants/acme"),
    ]
    assert json.loads(seen[1].content) == {"tenant_id": "acme", "name": "Acme", "config": {"mcp_port": 3101}}


def test_the_share_calls_go_to_the_platforms_and_the_tenants_share_routes() -> None:
    seen: list[httpx2.Request] = []
    with CliClient(URL, token="k", transport=recording(seen, {"workflow": "r"})) as client:
        client.share_workflow("globex", "report")
        client.share_workflow("globex", "re/port", share=False)
    with CliClient(URL, token="k", transport=recording(seen, {"workflow": "r"}), tenant="acme") as client:
        client.share_own_workflow("report", "globex")
    assert [(r.method, r.url.raw_path, r.headers.get("x-nexus-tenant")) for r in seen] == [
        ("POST", b"/cli/v1/admin/tenants/globex/workflows/report", None),
        ("DELETE", b"/cli/v1/admin/tenants/globex/workflows/re%2Fport", None),
        ("POST", b"/cli/v1/tenant/workflows/report/share", "acme"),
    ]
    assert json.loads(seen[2].content) == {"tenant_id": "globex"}


def test_a_tenant_conflict_answer_exits_65() -> None:
    def conflict(request: httpx2.Request) -> httpx2.Response:
        problem = {"code": "tenant_conflict", "title": "Tenant conflict", "detail": "taken", "status": 409}
        return httpx2.Response(409, json=problem)

    with (
        CliClient(URL, token="k", transport=httpx2.MockTransport(conflict)) as client,
        pytest.raises(Failure) as caught,
    ):
        client.create_tenant("acme", "Acme", {})
    assert (caught.value.exit_code, caught.value.title) == (65, "Tenant conflict")


def test_a_listing_without_tenants_is_an_unexpected_answer() -> None:
    with (
        CliClient(URL, token="k", transport=recording([], {"workflows": []})) as client,
        pytest.raises(Failure) as caught,
    ):
        client.list_tenants()
    assert caught.value.exit_code == 70


# -- the login cache, by server and tenant -----------------------------------------------------------


def test_a_platform_login_keeps_its_key_and_a_tenants_login_gets_its_own() -> None:
    assert login_key("HTTP://127.0.0.1:8000/") == normalize_url(URL)
    assert login_key(URL, "acme") == f"{normalize_url(URL)}#acme"
    assert login_key(URL, "acme") != login_key(URL, "globex")


def test_logins_on_the_platform_and_on_each_tenant_are_cached_and_forgotten_apart(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "config")
    store.save(URL, login_for("platform-access"))
    store.save(URL, login_for("acme-access"), tenant="acme")
    assert store.load(URL).access_token == "platform-access"  # type: ignore[union-attr]
    assert store.load(URL, tenant="acme").access_token == "acme-access"  # type: ignore[union-attr]
    assert store.load(URL, tenant="globex") is None

    assert store.delete(URL, tenant="acme")
    assert store.load(URL, tenant="acme") is None
    assert store.load(URL) is not None
    assert not store.delete(URL, tenant="acme")


def test_a_tenant_client_sends_and_renews_the_tenants_login(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "config")
    store.save(URL, login_for("access-1"))
    store.save(URL, login_for("access-tenant"), tenant="acme")
    server = FakeServer()
    server.valid = {"access-1"}  # the tenant's token is refused: renewed from the tenant's session
    source = CachedLogin(store, URL, clock=lambda: 1_000_000.0, tenant="acme")
    with CliClient(URL, source=source, transport=httpx2.MockTransport(server), tenant="acme") as client:
        client.list_workflows()
    assert server.seen == [
        ("/cli/v1/workflows", "access-tenant"),
        ("/cli/v1/auth/token", "nxs_s_secret"),
        ("/cli/v1/workflows", "access-minted-1"),
    ]
    assert store.load(URL, tenant="acme").access_token == "access-minted-1"  # type: ignore[union-attr]
    assert store.load(URL).access_token == "access-1"  # type: ignore[union-attr]


def test_the_login_hint_puts_the_global_options_before_the_command() -> None:
    assert "run `nexus --url http://h:1 login`." in str(not_logged_in("http://h:1"))
    hinted = not_logged_in("http://h:1", tenant="acme")
    assert "run `nexus --url http://h:1 --tenant acme login`." in str(hinted)
    refusal = Failure("Authentication required", "Token expired.", 77, problem={"code": "not_authenticated"})
    renewed = with_login_hint(refusal, "http://h:1", "acme")
    assert (
        renewed.detail == "Token expired; run `nexus --url http://h:1 --tenant acme login` (or pass --token)."
    )
    assert renewed.problem is not None
    assert renewed.problem["detail"] == renewed.detail


# -- nexus tenants create / delete ------------------------------------------------------------------


def test_settings_come_from_pairs_and_typed_options_with_the_port_as_a_number() -> None:
    typed = {"api_subdomain": "acme", "mcp_port": None, "quota_profile": None}
    config = tenant_config(["cli_prefix=acme", "mcp_port=3101", "compliance_level=hipaa_sox"], typed)
    assert config == {
        "cli_prefix": "acme",
        "mcp_port": 3101,
        "compliance_level": "hipaa_sox",
        "api_subdomain": "acme",
    }
    assert tenant_config([], {"mcp_port": 4000}) == {"mcp_port": 4000}
    assert tenant_config(["colour=blue"], {}) == {"colour": "blue"}  # the server names unknown keys


@pytest.mark.parametrize(
    ("pairs", "typed", "says"),
    [
        (["mcp_port=31o1"], {}, "mcp_port must be a whole number"),
        (["mcp_port=-1"], {}, "mcp_port must be a whole number"),
        (["cli_prefix=a", "cli_prefix=b"], {}, "'cli_prefix' is given more than once"),
        (["cli_prefix=a"], {"cli_prefix": "b"}, "given by both --cli-prefix and --config"),
        (["noequals"], {}, "expected --config key=value"),
    ],
)
def test_settings_given_wrongly_or_twice_are_usage_errors(
    pairs: list[str], typed: dict[str, Any], says: str
) -> None:
    with pytest.raises(Failure) as caught:
        tenant_config(pairs, typed)
    assert caught.value.exit_code == 2
    assert says in str(caught.value)


def test_create_refuses_a_bad_setting_before_calling_the_server() -> None:
    done = runner.invoke(
        cli,
        ["--url", UNREACHABLE, "--token", "k", "tenants", "create", "acme", "--name", "A", "--config", "x"],
    )
    assert done.exit_code == 2  # not 69: the unreachable server was never asked
    assert "Invalid setting" in done.stderr


def test_delete_without_a_terminal_needs_yes_and_calls_nothing() -> None:
    done = runner.invoke(cli, ["--url", UNREACHABLE, "--token", "k", "tenants", "delete", "acme"])
    assert done.exit_code == 2
    assert "give --yes" in done.stderr


def test_tenants_help_loads_none_of_the_server_stack() -> None:
    done = subprocess.run(  # noqa: S603  # our own interpreter and a fixed script
        [sys.executable, "-c", PROBE, json.dumps(["tenants", "create", "--help"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--api-subdomain" in done.stdout
    modules = json.loads(done.stderr.strip().splitlines()[-1])
    assert sorted(m for m in modules if m in HEAVY or m.split(".")[0] in HEAVY) == []


# -- the server's side of create ------------------------------------------------------------------


def test_a_create_body_names_the_tenant_and_may_carry_its_config() -> None:
    assert creation_of({"tenant_id": "acme", "name": "Acme"}) == ("acme", "Acme", None)
    body = {"tenant_id": "acme", "name": "Acme", "config": {"cli_prefix": "acme"}}
    assert creation_of(body) == ("acme", "Acme", {"cli_prefix": "acme"})


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"tenant_id": "acme", "name": "Acme", "owner": "me"}, "Unknown field(s) ['owner']"),
        ({"name": "Acme"}, "must name the tenant"),
        ({"tenant_id": 7, "name": "Acme"}, "must name the tenant"),
        ({"tenant_id": "acme", "name": "Acme", "config": ["cli_prefix"]}, "config must be a JSON object"),
    ],
)
def test_a_create_body_of_another_shape_is_invalid_input(body: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        creation_of(body)
    assert says in caught.value.message


def test_a_tenant_document_carries_its_times_as_iso_and_only_the_settings_given() -> None:
    created = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    tenant = Tenant(
        "acme",
        "Acme",
        TenantConfig(cli_prefix="acme", mcp_port=3101),
        created,
        TenantStatus.SUSPENDED,
        created,
        frozenset({"report", "billing"}),
    )
    assert tenant_document(tenant) == {
        "tenant_id": "acme",
        "name": "Acme",
        "status": "suspended",
        "created_at": "2030-01-02T03:04:05+00:00",
        "suspended_at": "2030-01-02T03:04:05+00:00",
        "config": {"cli_prefix": "acme", "mcp_port": 3101},
        "shared_workflows": ["billing", "report"],
    }
