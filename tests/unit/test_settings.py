"""Settings sections: a closed set of names, validation once at freeze, immutable while frozen."""

from __future__ import annotations

from typing import Any

import pytest

from nexus.errors import ConfigurationError
from nexus.settings import (
    ApiSettings,
    AuthSettings,
    McpSettings,
    MonitoringSettings,
    Section,
    Settings,
    TenancySettings,
)

SECTIONS: dict[str, type[Section]] = {
    "auth": AuthSettings,
    "monitoring": MonitoringSettings,
    "api": ApiSettings,
    "mcp": McpSettings,
    "tenancy": TenancySettings,
}


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings()
    assert settings.auth.api_key_cache_seconds == 5.0
    assert (settings.monitoring.metrics_path, settings.monitoring.audit_max_batch) == ("/metrics", 512)
    assert (settings.api.max_body_bytes, settings.api.docs_enabled) == (1_048_576, True)
    assert settings.api.node_timeout_seconds == 30.0
    assert (settings.api.enable_clustering, settings.api.health_check_interval) == (False, 30)
    assert (settings.mcp.path, settings.mcp.server_name) == ("/mcp", "nexus")


def test_sections_come_in_a_fixed_order_named_as_the_app_exposes_them() -> None:
    assert [section.section for section in Settings().sections()] == [
        "auth",
        "monitoring",
        "api",
        "mcp",
        "tenancy",
    ]


@pytest.mark.parametrize(
    ("section", "valid"),
    [
        (
            "auth",
            "provider, mfa, session_duration, cross_channel_sso, require_reauth_for, reauth_max_age, "
            "access_token_duration, token_issuer, signing_key_file, token_leeway_seconds, "
            "session_cache_seconds, api_key_cache_seconds, "
            "login_failures_per_account, login_failures_per_address, password_time_cost, "
            "password_memory_kib, sso_return_hosts, multi_tenant, tenant_isolation, compliance_mode, "
            "audit_log_retention",
        ),
        ("monitoring", "metrics_path, audit_max_batch, backend"),
        (
            "api",
            "max_body_bytes, docs_enabled, node_timeout_seconds, enable_clustering, health_check_interval",
        ),
        ("mcp", "path, server_name"),
        (
            "tenancy",
            "manager, routing, base_domain, trusted_proxies, refresh_seconds, storage_refresh_seconds",
        ),
    ],
)
def test_unknown_setting_raises_attribute_error_naming_the_valid_ones(section: str, valid: str) -> None:
    target = SECTIONS[section]()
    with pytest.raises(AttributeError) as raised:
        target.session_lifetime = 28800
    assert str(raised.value) == f"app.{section} has no setting 'session_lifetime'; valid: {valid}."


def test_the_internal_frozen_flag_cannot_be_set_as_a_setting() -> None:
    with pytest.raises(AttributeError):
        ApiSettings()._frozen = False


BAD_VALUES = [
    ("auth", "api_key_cache_seconds", -1, "a number of seconds >= 0"),
    ("auth", "api_key_cache_seconds", "5", "a number of seconds >= 0"),
    ("auth", "api_key_cache_seconds", True, "a number of seconds >= 0"),
    ("monitoring", "metrics_path", "metrics", "a path starting with '/'"),
    ("monitoring", "audit_max_batch", 0, "an integer from 1 to 10000"),
    ("monitoring", "audit_max_batch", 10_001, "an integer from 1 to 10000"),
    ("monitoring", "audit_max_batch", 1.5, "an integer from 1 to 10000"),
    ("monitoring", "backend", "prometheus", "a PrometheusMonitoring or None"),
    ("api", "max_body_bytes", 0, "a positive integer"),
    ("api", "max_body_bytes", -1, "a positive integer"),
    ("api", "max_body_bytes", 1.5, "a positive integer"),
    ("api", "max_body_bytes", "1MB", "a positive integer"),
    ("api", "docs_enabled", "yes", "True or False"),
    ("api", "docs_enabled", 1, "True or False"),
    ("api", "node_timeout_seconds", 0, "a positive number"),
    ("api", "node_timeout_seconds", -2.5, "a positive number"),
    ("api", "node_timeout_seconds", True, "a positive number"),
    ("api", "node_timeout_seconds", "30", "a positive number"),
    ("api", "enable_clustering", "yes", "True or False"),
    ("api", "enable_clustering", 1, "True or False"),
    ("api", "health_check_interval", 0, "a number of seconds from 0.2 to 86400"),
    ("api", "health_check_interval", 0.1, "a number of seconds from 0.2 to 86400"),
    ("api", "health_check_interval", -30, "a number of seconds from 0.2 to 86400"),
    ("api", "health_check_interval", True, "a number of seconds from 0.2 to 86400"),
    ("api", "health_check_interval", "30", "a number of seconds from 0.2 to 86400"),
    ("api", "health_check_interval", float("inf"), "a number of seconds from 0.2 to 86400"),
    ("api", "health_check_interval", float("nan"), "a number of seconds from 0.2 to 86400"),
    ("mcp", "path", "mcp", "a path like '/mcp'"),
    ("mcp", "path", "/", "a path like '/mcp'"),
    ("mcp", "path", "/mcp/", "a path like '/mcp'"),
    ("mcp", "server_name", "", "a non-empty string"),
]


@pytest.mark.parametrize(("section", "name", "value", "expected"), BAD_VALUES)
def test_bad_value_is_accepted_on_assignment_and_refused_at_freeze(
    section: str, name: str, value: Any, expected: str
) -> None:
    target = SECTIONS[section]()
    setattr(target, name, value)
    with pytest.raises(ConfigurationError) as raised:
        target.freeze()
    assert str(raised.value) == f"app.{section}.{name} must be {expected}, got {value!r}."


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [
        ("auth", "api_key_cache_seconds", 0),
        ("auth", "api_key_cache_seconds", 0.5),
        ("monitoring", "metrics_path", "/internal/metrics"),
        ("monitoring", "audit_max_batch", 1),
        ("monitoring", "audit_max_batch", 10_000),
        ("api", "max_body_bytes", 1),
        ("api", "docs_enabled", False),
        ("api", "node_timeout_seconds", 0.001),
        ("api", "node_timeout_seconds", 600),
        ("api", "enable_clustering", True),
        ("api", "health_check_interval", 0.2),
        ("api", "health_check_interval", 30),
        ("mcp", "path", "/tools/mcp"),
        ("mcp", "server_name", "reporting"),
    ],
)
def test_edge_values_pass_validation_and_are_kept(section: str, name: str, value: Any) -> None:
    target = SECTIONS[section]()
    setattr(target, name, value)
    target.freeze()
    assert getattr(target, name) == value


def test_frozen_section_refuses_changes_and_keeps_its_value() -> None:
    api = ApiSettings()
    api.max_body_bytes = 2048
    api.freeze()
    with pytest.raises(
        ConfigurationError, match=r"app\.api\.max_body_bytes cannot change while the app is serving"
    ):
        api.max_body_bytes = 10
    assert api.max_body_bytes == 2048


def test_frozen_section_still_refuses_unknown_names_with_attribute_error() -> None:
    mcp = McpSettings()
    mcp.freeze()
    with pytest.raises(AttributeError, match="valid: path, server_name"):
        mcp.port = 3000


def test_section_that_fails_validation_stays_changeable_so_the_value_can_be_fixed() -> None:
    auth = AuthSettings()
    auth.api_key_cache_seconds = -1
    with pytest.raises(ConfigurationError):
        auth.freeze()
    auth.api_key_cache_seconds = 1
    auth.freeze()
    assert auth.api_key_cache_seconds == 1


def test_thawed_section_accepts_changes_again() -> None:
    monitoring = MonitoringSettings()
    monitoring.freeze()
    monitoring.thaw()
    monitoring.audit_max_batch = 64
    assert monitoring.audit_max_batch == 64


def test_each_section_freezes_on_its_own() -> None:
    settings = Settings()
    settings.api.freeze()
    settings.mcp.server_name = "still-open"
    with pytest.raises(ConfigurationError):
        settings.api.docs_enabled = False
    assert settings.mcp.server_name == "still-open"


@pytest.mark.parametrize(("section", "name"), [("monitoring", "metrics_path"), ("mcp", "path")])
def test_non_string_path_is_refused_with_configuration_error(section: str, name: str) -> None:
    target = SECTIONS[section]()
    setattr(target, name, 8080)
    with pytest.raises(ConfigurationError):
        target.freeze()


@pytest.mark.parametrize(("section", "name"), [("api", "max_body_bytes"), ("monitoring", "audit_max_batch")])
def test_bool_is_refused_for_an_integer_setting(section: str, name: str) -> None:
    target = SECTIONS[section]()
    setattr(target, name, True)
    with pytest.raises(ConfigurationError):
        target.freeze()
