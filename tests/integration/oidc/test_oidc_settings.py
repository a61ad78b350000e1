"""OIDC settings are validated once, when built, and never show the client secret."""

from __future__ import annotations

from typing import Any

import pytest

from nexus.backends.auth.oidc import OidcSettings
from nexus.errors import ConfigurationError

VALID: dict[str, Any] = {
    "issuer": "https://id.example.test/realms/main",
    "client_id": "nexus",
    "client_secret": "very-secret-value",
    "redirect_uri": "https://nexus.example.test/auth/oidc/callback",
}


def test_valid_settings_freeze_the_role_map_and_hide_the_secret() -> None:
    role_map = {"admins": "admin"}
    settings = OidcSettings(**VALID, role_map=role_map)
    role_map["developers"] = "developer"

    assert dict(settings.role_map) == {"admins": "admin"}
    assert "very-secret-value" not in repr(settings)


def test_loopback_http_issuer_is_allowed_for_a_local_provider() -> None:
    settings = OidcSettings(**{**VALID, "issuer": "http://127.0.0.1:8080/realms/main"})

    assert settings.issuer.startswith("http://127.0.0.1")


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"issuer": "http://id.example.test"}, "issuer"),
        ({"issuer": "id.example.test"}, "issuer"),
        ({"redirect_uri": "http://nexus.example.test/cb"}, "redirect_uri"),
        ({"client_id": ""}, "client_id"),
        ({"client_secret": ""}, "client_secret"),
        ({"scopes": ("profile", "email")}, "scopes"),
        ({"allowed_algorithms": ("RS256", "HS256")}, "allowed_algorithms"),
        ({"allowed_algorithms": ("none",)}, "allowed_algorithms"),
        ({"allowed_algorithms": ()}, "allowed_algorithms"),
        ({"state_ttl_s": 0}, "state_ttl_s"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"leeway_s": 3600}, "leeway_s"),
    ],
)
def test_unusable_setting_is_refused_by_name(change: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError, match=setting) as refused:
        OidcSettings(**{**VALID, **change})

    assert "very-secret-value" not in str(refused.value)
