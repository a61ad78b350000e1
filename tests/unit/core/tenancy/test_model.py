"""Tenants, their configuration and quota profiles are checked when built; nothing unsafe gets in."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.core.tenancy.model import (
    BUILTIN_PROFILES,
    QuotaProfile,
    Resource,
    Tenant,
    TenantConfig,
    TenantStatus,
    check_tenant_id,
)
from nexus.errors import ConfigurationError

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_the_documents_tenant_is_accepted_as_written() -> None:
    config = TenantConfig.from_mapping(
        {
            "api_subdomain": "client001",
            "cli_prefix": "client001",
            "mcp_port": 3001,
            "quota_profile": "enterprise_large",
            "compliance_level": "hipaa_sox",
        }
    )
    tenant = Tenant("enterprise_client_001", "Enterprise Client Corp", config, NOW)
    assert tenant.is_active
    assert tenant.status is TenantStatus.ACTIVE
    assert config.to_mapping()["compliance_level"] == "hipaa_sox"
    assert "enterprise_large" in BUILTIN_PROFILES


def test_the_documents_quotas_make_a_profile_and_unknown_resources_are_refused() -> None:
    quotas = {
        "api_requests_per_hour": 10000,
        "concurrent_workflows": 50,
        "cli_sessions": 100,
        "mcp_tools": 25,
        "storage_mb": 10000,
    }
    profile = QuotaProfile.from_mapping("default", quotas)
    assert profile.limit(Resource.MCP_TOOLS) == 25
    assert profile.to_mapping() == quotas
    with pytest.raises(ConfigurationError, match=r"Unknown quota resource\(s\) \['gpu_hours'\]"):
        QuotaProfile.from_mapping("x", {"gpu_hours": 1})
    assert QuotaProfile("open").limit(Resource.STORAGE_MB) is None  # None: no limit


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10"])
def test_a_quota_is_a_positive_whole_number(limit: object) -> None:
    with pytest.raises(ConfigurationError, match="positive whole number"):
        QuotaProfile.from_mapping("p", {"cli_sessions": limit})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("api_subdomain", "Client001"),  # DNS labels are compared lowercase; we store them so
        ("api_subdomain", "-client"),
        ("api_subdomain", "client.001"),  # one label, never a dotted name
        ("cli_prefix", "client 001"),
        ("mcp_port", 0),
        ("mcp_port", 70000),
        ("mcp_port", "3001"),
        ("quota_profile", "Enterprise"),
        ("compliance_level", "hipaa;drop"),
    ],
)
def test_a_config_value_that_could_not_route_or_name_safely_is_refused(key: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=key):
        TenantConfig.from_mapping({key: value})


def test_an_unknown_config_key_is_refused_rather_than_ignored() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown tenant config key\(s\) \['api_subdomian'\]"):
        TenantConfig.from_mapping({"api_subdomian": "typo"})


@pytest.mark.parametrize(
    "tenant_id",
    ["", "1abc", "Abc", "a-b", "a b", "a" * 49, "client;drop schema", "../x", "public\x00", None, 7],
)
def test_a_tenant_id_that_could_not_be_a_schema_name_is_refused(tenant_id: object) -> None:
    with pytest.raises(ConfigurationError, match="Invalid tenant id"):
        check_tenant_id(tenant_id)


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "line\nbreak"])
def test_a_tenant_name_must_be_printable_and_bounded(name: str) -> None:
    with pytest.raises(ConfigurationError, match="name"):
        Tenant("acme", name, TenantConfig(), NOW)


def test_a_tenant_needs_an_aware_creation_time() -> None:
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        Tenant("acme", "Acme", TenantConfig(), datetime(2026, 1, 1))  # the point


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_an_accepted_tenant_id_is_a_plain_lowercase_identifier(text: str) -> None:
    try:
        accepted = check_tenant_id(text)
    except ConfigurationError:
        return
    assert accepted.isascii()
    assert accepted.isidentifier()
    assert accepted == accepted.lower()
    assert len(accepted) <= 48
