"""The source document's authentication classes: `EnterpriseAuthProvider` and `MultiFactorAuth`.

Both only describe what is wanted and check it at once; the assembly turns them into the policies
and adapters of `nexus.core.auth`. Nothing accepted here is ignored: every argument changes what
a login does, or construction fails naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from nexus.core.auth.model import FactorKind
from nexus.core.auth.policy import MfaPolicy
from nexus.core.auth.ports import Directory, EphemeralStore, SsoProtocol
from nexus.core.types import Channel
from nexus.enterprise.authz import ABACPolicyEngine, RBACManager
from nexus.errors import ConfigurationError

__all__ = ["ABACPolicyEngine", "EnterpriseAuthProvider", "MultiFactorAuth", "RBACManager"]

# Checks the SSO settings at construction, before the app's own URL is known.
_PLACEHOLDER_BASE = "http://127.0.0.1:8000"
_METHODS = {kind.value for kind in FactorKind if kind is not FactorKind.RECOVERY}
_CHANNELS = {channel.value for channel in Channel}


def _names(value: object, what: str) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{what} must be a list of names, got {value!r}.")
    items = list(value)
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigurationError(f"{what} must be a list of non-empty names, got {items!r}.")
    return frozenset(items)


@dataclass(frozen=True, eq=False)
class MultiFactorAuth:
    """Second factors: which methods count, on which channels they are due, and who is exempt.

    `session_binding=True` makes one second factor cover every channel of the login session;
    with False, each channel asks for its own before it gets a token. `rp_id` and `origin` are the
    WebAuthn relying party of `hardware_key` (the site users register their keys with); without
    them it is this server on loopback: `localhost` and `http://localhost:<api_port>`.
    """

    methods: Iterable[str] = ("totp",)
    required_for: Iterable[str] = ("api", "cli", "mcp")
    bypass_roles: Iterable[str] = ()
    session_binding: bool = True
    rp_id: str | None = None
    origin: str | None = None
    rp_name: str = "Nexus"
    challenge_seconds: float = 300
    max_attempts: int = 5
    sms_sender: Any = None
    """Delivers text messages (`async send(phone, message)`); a development sink when None."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        methods = _names(self.methods, "MultiFactorAuth.methods")
        if not methods or not methods <= _METHODS:
            raise ConfigurationError(
                f"MultiFactorAuth.methods must be some of {sorted(_METHODS)}, got {sorted(methods)}."
            )
        channels = _names(self.required_for, "MultiFactorAuth.required_for")
        if not channels <= _CHANNELS:
            raise ConfigurationError(
                f"MultiFactorAuth.required_for must be some of {sorted(_CHANNELS)}, got {sorted(channels)}."
            )
        _names(self.bypass_roles, "MultiFactorAuth.bypass_roles")
        if not isinstance(self.session_binding, bool):
            raise ConfigurationError("MultiFactorAuth.session_binding must be True or False.")
        self._check_method_settings(methods)
        self._check_limits()

    def _check_method_settings(self, methods: frozenset[str]) -> None:
        """Settings that belong to one method: refused when that method is not in use."""
        for name in ("rp_id", "origin"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"MultiFactorAuth.{name} must be a non-empty string or None.")
            if value is not None and "hardware_key" not in methods:
                raise ConfigurationError(
                    f"MultiFactorAuth.{name} is for hardware_key, which is not in methods."
                )
        if self.sms_sender is not None and not callable(getattr(self.sms_sender, "send", None)):
            raise ConfigurationError("MultiFactorAuth.sms_sender must have an async send(phone, message).")
        if self.sms_sender is not None and "sms" not in methods:
            raise ConfigurationError("MultiFactorAuth.sms_sender is for sms, which is not in methods.")

    def _check_limits(self) -> None:
        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or self.max_attempts < 1
        ):
            raise ConfigurationError("MultiFactorAuth.max_attempts must be a positive integer.")
        seconds = self.challenge_seconds
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 30 <= seconds <= 3600:
            raise ConfigurationError("MultiFactorAuth.challenge_seconds must be from 30 to 3600.")

    def policy(self) -> MfaPolicy:
        return MfaPolicy(
            methods=frozenset(FactorKind(m) for m in _names(self.methods, "methods")),
            required_for=frozenset(Channel(c) for c in _names(self.required_for, "required_for")),
            bypass_roles=_names(self.bypass_roles, "bypass_roles"),
            session_binding=self.session_binding,
            challenge_ttl_s=float(self.challenge_seconds),
            max_attempts=self.max_attempts,
        )


@dataclass(frozen=True, slots=True)
class ProviderParts:
    """What a provider contributes to the running app."""

    directory: Directory | None
    sso: Mapping[str, SsoProtocol]


@dataclass(frozen=True, eq=False)
class EnterpriseAuthProvider:
    """Where identities come from: local users always, plus an LDAP directory and SSO.

    `ldap_server` is the directory URL (alone it means anonymous search from the directory's naming
    context); the other LDAP settings go as `ldap_<name>=` (for example `ldap_user_base`,
    `ldap_bind_dn`, `ldap_group_role_map`; see `nexus.backends.auth.ldap.LdapSettings`).
    `sso_endpoint` is an OIDC issuer, or a SAML identity provider's metadata URL when it mentions
    saml (or `sso_protocol="saml"`); their settings go as `oidc_<name>=` / `saml_<name>=`, and the
    callback endpoints default to this app's own `/auth/sso/{oidc,saml}/...` URLs.
    `enable_api_keys=False` refuses API keys on every channel; `enable_mfa=True` requires a second
    factor (TOTP on every channel unless `app.auth.mfa` says otherwise).
    """

    ldap_server: str | None = None
    sso_endpoint: str | None = None
    enable_api_keys: bool = True
    enable_mfa: bool = False
    sso_protocol: str = "auto"
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)  # bind passwords, client secrets

    def __init__(
        self,
        ldap_server: str | None = None,
        sso_endpoint: str | None = None,
        enable_api_keys: bool = True,
        enable_mfa: bool = False,
        *,
        sso_protocol: str = "auto",
        **options: Any,
    ) -> None:
        object.__setattr__(self, "ldap_server", ldap_server)
        object.__setattr__(self, "sso_endpoint", sso_endpoint)
        object.__setattr__(self, "enable_api_keys", enable_api_keys)
        object.__setattr__(self, "enable_mfa", enable_mfa)
        object.__setattr__(self, "sso_protocol", sso_protocol)
        object.__setattr__(self, "options", dict(options))
        self.validate()

    def validate(self) -> None:
        for name in ("enable_api_keys", "enable_mfa"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"EnterpriseAuthProvider.{name} must be True or False.")
        for name in ("ldap_server", "sso_endpoint"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or "://" not in value):
                raise ConfigurationError(f"EnterpriseAuthProvider.{name} must be a URL, got {value!r}.")
        if self.sso_protocol not in ("auto", "oidc", "saml"):
            raise ConfigurationError("EnterpriseAuthProvider.sso_protocol must be 'auto', 'oidc' or 'saml'.")
        unknown = [k for k in self.options if not k.startswith(("ldap_", "oidc_", "saml_"))]
        if unknown:
            raise ConfigurationError(
                f"EnterpriseAuthProvider got unknown arguments {sorted(unknown)}; LDAP, OIDC and SAML "
                "settings are passed as ldap_<name>, oidc_<name> and saml_<name>."
            )
        self._check_groups()
        self._ldap_settings()
        self._sso_settings(_PLACEHOLDER_BASE)

    def _check_groups(self) -> None:
        """Each ldap_/oidc_/saml_ setting must belong to a directory or protocol actually in use."""
        if self.ldap_server is None and self._group("ldap_"):
            raise ConfigurationError("ldap_* settings were given without ldap_server.")
        for prefix in ("oidc_", "saml_"):
            if self._group(prefix) and self.sso_endpoint is None:
                raise ConfigurationError(f"{prefix}* settings were given without sso_endpoint.")
        unused = "oidc_" if self.uses_saml else "saml_"
        if self.sso_endpoint is not None and self._group(unused):
            protocol = "SAML" if self.uses_saml else "OIDC"
            raise ConfigurationError(
                f"{unused}* settings were given, but sso_endpoint is used over {protocol}; "
                "set sso_protocol to say which."
            )

    @property
    def uses_saml(self) -> bool:
        if self.sso_endpoint is None:
            return False
        if self.sso_protocol != "auto":
            return self.sso_protocol == "saml"
        return "saml" in urlsplit(self.sso_endpoint).path.lower() or bool(self._group("saml_"))

    def _group(self, prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: v for k, v in self.options.items() if k.startswith(prefix)}

    def _ldap_settings(self) -> Any:
        if self.ldap_server is None:
            return None
        from nexus.backends.auth.ldap import LdapSettings

        return _build(LdapSettings, "ldap_", {"url": self.ldap_server, **self._group("ldap_")})

    def _sso_settings(self, base_url: str) -> tuple[str, Any] | None:
        """The SSO settings; endpoints on this app default to its API URL `base_url`."""
        if self.sso_endpoint is None:
            return None
        if self.uses_saml:
            from nexus.backends.auth.saml import SamlSettings

            given = self._group("saml_")
            given.setdefault("idp_metadata", self.sso_endpoint)
            given.setdefault("entity_id", f"{base_url}/auth/sso/saml/metadata")
            given.setdefault("acs_url", f"{base_url}/auth/sso/saml/callback")
            return "saml", _build(SamlSettings, "saml_", given)
        from nexus.backends.auth.oidc import OidcSettings

        given = {"issuer": self.sso_endpoint, **self._group("oidc_")}
        given.setdefault("redirect_uri", f"{base_url}/auth/sso/oidc/callback")
        return "oidc", _build(OidcSettings, "oidc_", given)

    async def open(self, ephemeral: EphemeralStore, base_url: str) -> ProviderParts:
        """Build the directory and SSO adapters (SAML reads the IdP metadata, off the event loop).

        `base_url` is the app's API URL: the SAML entity id and ACS URL and the OIDC redirect URI
        default to its `/auth/sso/...` endpoints.
        """
        directory: Directory | None = None
        ldap = self._ldap_settings()
        if ldap is not None:
            from nexus.backends.auth.ldap import LdapDirectory

            directory = LdapDirectory(ldap)
        sso: dict[str, SsoProtocol] = {}
        chosen = self._sso_settings(base_url)
        if chosen is not None:
            name, settings = chosen
            if name == "saml":
                from nexus.backends.auth.saml import SamlServiceProvider

                sso["saml"] = await SamlServiceProvider.open(settings, ephemeral)
            else:
                from nexus.backends.auth.oidc import OidcClient

                sso["oidc"] = OidcClient(settings, ephemeral)
        return ProviderParts(directory=directory, sso=sso)


def _build(kind: Any, prefix: str, values: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigurationError(
            f"Unknown settings {', '.join(prefix + u for u in unknown)}; valid: "
            f"{', '.join(sorted(prefix + n for n in names))}."
        )
    try:
        return kind(**values)
    except TypeError as exc:
        raise ConfigurationError(f"Incomplete {prefix.rstrip('_').upper()} settings: {exc}.") from exc
