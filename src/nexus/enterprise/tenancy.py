"""The source document's tenancy surface: `TenantManager` (and `create_production_nexus` in
`nexus`). What each setting does is enforced in core (`nexus.core.tenancy`); this is the
user-facing configuration object that names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from nexus.core.tenancy.model import BUILTIN_PROFILES, IsolationLevel, QuotaProfile, check_word
from nexus.core.tenancy.policy import CrossTenantPolicy
from nexus.core.tenancy.quota import QuotaBook
from nexus.errors import ConfigurationError
from nexus.settings import AuthSettings, TenancySettings

DEFAULT_PROFILE: Final = "default"
STORAGE_KINDS: Final = ("schema", "database")


class TenantManager:
    """How tenants are kept apart and what each may use.

    `isolation_level`: "strict" (each tenant's data in its own PostgreSQL schema, or database with
    `storage="database"`, reachable only through the tenant's own database role), "moderate"
    (shared tables, tenant keys enforced by the platform's queries and available to row-level
    security as `nexus.tenant_id`) or "basic" (namespacing only). `resource_quotas` apply to
    tenants whose config names no `quota_profile`; `quota_profiles` adds named profiles to the
    built-in ones (standard, enterprise_small, enterprise_large, unlimited).
    `cross_tenant_policies`: see `nexus.core.tenancy.policy`.
    """

    def __init__(
        self,
        isolation_level: str = "strict",
        resource_quotas: Mapping[str, int | None] | None = None,
        cross_tenant_policies: Mapping[str, Any] | None = None,
        *,
        quota_profiles: Mapping[str, Mapping[str, int | None]] | None = None,
        storage: str = "schema",
        database_name: str = "{tenant_id}_database",
        data_url: str | None = None,
    ) -> None:
        try:
            self.isolation_level = IsolationLevel(isolation_level)
        except ValueError:
            raise ConfigurationError(
                f"isolation_level is 'strict', 'moderate' or 'basic', not {isolation_level!r}."
            ) from None
        self.policy = CrossTenantPolicy.from_mapping(cross_tenant_policies)
        if storage not in STORAGE_KINDS:
            raise ConfigurationError(f"storage is 'schema' or 'database', not {storage!r}.")
        if storage == "database" and self.isolation_level is not IsolationLevel.STRICT:
            raise ConfigurationError(
                "storage='database' gives each tenant a database: it needs strict isolation."
            )
        if not isinstance(database_name, str) or database_name.count("{tenant_id}") != 1:
            raise ConfigurationError(
                "database_name must contain {tenant_id} once, like '{tenant_id}_database'."
            )
        if data_url is not None and (not isinstance(data_url, str) or "://" not in data_url):
            raise ConfigurationError("data_url must be a database URL such as postgresql://host/db.")
        self.storage = storage
        self.database_name = database_name
        self.data_url = data_url
        self.default_quotas = QuotaProfile.from_mapping(DEFAULT_PROFILE, resource_quotas or {})
        self._profiles: dict[str, QuotaProfile] = {**BUILTIN_PROFILES, DEFAULT_PROFILE: self.default_quotas}
        for name, limits in (quota_profiles or {}).items():
            self.define_quota_profile(name, limits)

    @property
    def profiles(self) -> Mapping[str, QuotaProfile]:
        """Every profile a tenant may name: the built-in ones, "default" and those defined."""
        return MappingProxyType(self._profiles)

    def define_quota_profile(self, name: str, limits: Mapping[str, int | None]) -> QuotaProfile:
        """Add or replace a named profile; tenants naming it count against it from their next call."""
        check_word(name, "a quota profile name")
        if name == DEFAULT_PROFILE:
            raise ConfigurationError(
                "The 'default' profile is the manager's resource_quotas; set those instead."
            )
        profile = QuotaProfile.from_mapping(name, limits)
        self._profiles[name] = profile
        return profile

    def quota_book(self) -> QuotaBook:
        """The live book: profiles defined later are seen at once."""
        return QuotaBook(self.default_quotas, self.profiles)

    def __repr__(self) -> str:
        return (
            f"TenantManager(isolation_level={self.isolation_level.value!r}, storage={self.storage!r}, "
            f"policy={self.policy!r})"
        )


def manager_in_use(enable_auth: bool, tenancy: TenancySettings, auth: AuthSettings) -> TenantManager | None:
    """The tenant manager an app serves with: `app.tenancy.manager`, or one made from the
    document's `app.auth.multi_tenant` / `app.auth.tenant_isolation`; None for no tenancy.

    Raises:
        ConfigurationError: the settings disagree, or tenancy is asked for without identities
            (with auth off a route alone would name the tenant, and anyone could use any).
    """
    manager = tenancy.manager
    if manager is not None and not isinstance(manager, TenantManager):
        raise ConfigurationError(
            f"app.tenancy.manager must be a TenantManager, not {type(manager).__name__}."
        )
    if auth.multi_tenant is False and manager is not None:
        raise ConfigurationError("app.auth.multi_tenant is False but app.tenancy.manager is set; pick one.")
    if manager is None and auth.multi_tenant:
        manager = TenantManager(isolation_level=auth.tenant_isolation or "strict")
    if manager is None:
        if auth.tenant_isolation is not None:
            raise ConfigurationError("app.auth.tenant_isolation is set but multi_tenant is not: set both.")
        return None
    isolation = auth.tenant_isolation
    if isolation is not None and isolation != manager.isolation_level.value:
        raise ConfigurationError(
            f"app.auth.tenant_isolation is {isolation!r} but the tenant manager's isolation_level is "
            f"{manager.isolation_level.value!r}."
        )
    if not enable_auth:
        raise ConfigurationError(
            "Tenancy needs enable_auth=True: tenants are told apart by who calls as well as by route."
        )
    return manager if isinstance(manager, TenantManager) else None
