"""Tenant routing: only how a request arrived names its tenant; anything else finds none."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.core.tenancy.model import Tenant, TenantConfig
from nexus.core.tenancy.routing import RoutingRules, TenantIndex, TenantRouter
from nexus.errors import ConfigurationError

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ACME = Tenant("acme", "Acme", TenantConfig(api_subdomain="acme", cli_prefix="acme-cli", mcp_port=3001), NOW)
GLOBEX = Tenant("globex", "Globex", TenantConfig(api_subdomain="globex", mcp_port=3002), NOW)


@pytest.fixture
def router() -> TenantRouter:
    rules = RoutingRules.from_mapping(
        {"api": "subdomain", "cli": "prefix", "mcp": "port_offset"},
        base_domain="api.company.com",
        trusted_proxies=["10.0.0.0/8"],
    )
    return TenantRouter(rules, TenantIndex.of([ACME, GLOBEX]))


@pytest.mark.parametrize(
    "host",
    ["acme.api.company.com", "ACME.api.company.com", "acme.api.company.com:8443", "acme.api.company.com."],
)
def test_the_api_host_names_the_tenant_by_its_subdomain(router: TenantRouter, host: str) -> None:
    assert router.for_api(host, "192.0.2.7") is ACME


@pytest.mark.parametrize(
    "host",
    [
        "api.company.com",  # the bare domain is no tenant's
        "x.acme.api.company.com",  # one label only
        "acme.api.company.com.evil.net",
        "acmeapi.company.com",
        "acme.company.com",
        "unknown.api.company.com",
        "[::1]:8000",
        "127.0.0.1:8000",
        "",
        None,
    ],
)
def test_any_other_host_finds_no_tenant(router: TenantRouter, host: str | None) -> None:
    assert router.for_api(host, "192.0.2.7") is None


def test_a_forwarded_host_counts_only_from_a_trusted_proxy(router: TenantRouter) -> None:
    direct = "globex.api.company.com"
    assert router.for_api(direct, "192.0.2.7", forwarded_host="acme.api.company.com") is GLOBEX
    assert router.for_api("proxy.internal", "10.1.2.3", forwarded_host="acme.api.company.com") is ACME
    # The nearest proxy's entry is the last one; an earlier one came from the client.
    forged = "globex.api.company.com, acme.api.company.com"
    assert router.for_api("proxy.internal", "10.1.2.3", forwarded_host=forged) is ACME


def test_cli_prefix_and_mcp_port_and_path_each_name_one_tenant(router: TenantRouter) -> None:
    assert router.for_cli("acme-cli") is ACME
    assert router.for_cli("acme") is None  # the prefix, not the id
    assert router.for_cli(None) is None
    assert (router.for_mcp_port(3001), router.for_mcp_port(3002), router.for_mcp_port(3000)) == (
        ACME,
        GLOBEX,
        None,
    )
    assert router.for_mcp_path("/t/globex/mcp") is GLOBEX
    for path in ("/t/nobody/mcp", "/t/globex/mcp/", "/t/GLOBEX/mcp", "/mcp", "/t/globex/../acme/mcp"):
        assert router.for_mcp_path(path) is None


@pytest.mark.parametrize(
    ("routing", "problem"),
    [
        ({"api": "header"}, "tenant_routing\\['api'\\]"),
        ({"mcp": "query"}, "tenant_routing\\['mcp'\\]"),
        ({"web": "subdomain"}, "not \\['web'\\]"),
    ],
)
def test_unknown_routing_modes_are_refused(routing: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        RoutingRules.from_mapping(routing)


def test_bad_base_domains_and_proxies_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="base_domain"):
        RoutingRules.from_mapping({}, base_domain="*.company.com")
    with pytest.raises(ConfigurationError, match="trusted_proxies"):
        RoutingRules.from_mapping({}, trusted_proxies=["not-an-address"])


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80), st.sampled_from(["192.0.2.7", "10.1.2.3", "", "garbage"]))
def test_a_host_finds_a_tenant_only_when_it_is_that_tenants_name(host: str, client: str) -> None:
    router = TenantRouter(
        RoutingRules.from_mapping({}, base_domain="api.company.com", trusted_proxies=["10.0.0.0/8"]),
        TenantIndex.of([ACME, GLOBEX]),
    )
    found = router.for_api(host, client)
    if found is not None:
        bare = host.lower().rstrip(".").rsplit(":", 1)[0]
        assert bare == f"{found.config.api_subdomain}.api.company.com"
