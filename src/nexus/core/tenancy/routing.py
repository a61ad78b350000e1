"""Which tenant a request is for, from how it arrived, never from what it carries as inputs.

API: the Host header's left-most label under the configured base domain (a forwarded host only
from a trusted proxy). CLI: the `--tenant` prefix. MCP: the listener's port, or `/t/{tenant}/mcp`.
Every lookup is one dictionary read, whatever the number of tenants. Imports only core and errors.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from nexus.core.tenancy.model import Tenant, check_tenant_id
from nexus.core.types import RouteKind, TenantRoute
from nexus.errors import ConfigurationError

API_MODES: Final = ("subdomain",)
CLI_MODES: Final = ("prefix",)
MCP_MODES: Final = ("port_offset", "path")
_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}")
_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MCP_PATH = re.compile(r"/t/([a-z][a-z0-9_]{0,47})/mcp")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RoutingRules:
    """The document's `tenant_routing` plus what subdomain routing needs to be safe."""

    api: str = "subdomain"
    cli: str = "prefix"
    mcp: str = "port_offset"
    base_domain: str | None = None
    """The API's own domain, e.g. "api.company.com": tenant1.api.company.com is tenant1's."""
    trusted_proxies: tuple[Network, ...] = ()
    """Only requests from these addresses may name the host in X-Forwarded-Host."""

    def __post_init__(self) -> None:
        for channel, mode, modes in (
            ("api", self.api, API_MODES),
            ("cli", self.cli, CLI_MODES),
            ("mcp", self.mcp, MCP_MODES),
        ):
            if mode not in modes:
                raise ConfigurationError(
                    f"tenant_routing[{channel!r}] is one of {list(modes)}, not {mode!r}."
                )
        domain = self.base_domain
        if domain is not None and (not isinstance(domain, str) or _DOMAIN.fullmatch(domain) is None):
            raise ConfigurationError(f"base_domain must be a DNS name like api.company.com, got {domain!r}.")

    @classmethod
    def from_mapping(
        cls,
        routing: Mapping[str, str] | None,
        *,
        base_domain: str | None = None,
        trusted_proxies: Iterable[str] = (),
    ) -> RoutingRules:
        routing = dict(routing or {})
        unknown = sorted(set(routing) - {"api", "cli", "mcp"})
        if unknown:
            raise ConfigurationError(f"tenant_routing names channels api, cli and mcp, not {unknown}.")
        try:
            networks = tuple(ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies)
        except ValueError as exc:
            raise ConfigurationError(f"trusted_proxies holds an address that is not one: {exc}.") from exc
        return cls(**routing, base_domain=base_domain, trusted_proxies=networks)

    def is_trusted(self, client_addr: str) -> bool:
        try:
            address = ipaddress.ip_address(client_addr)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 proxy as a dual-stack listener reports it
        return any(address in network for network in self.trusted_proxies)


@dataclass(frozen=True, slots=True)
class TenantIndex:
    """Tenants by each route: built once per change of the registry, read on every request."""

    by_id: Mapping[str, Tenant] = field(default_factory=lambda: MappingProxyType({}))
    by_subdomain: Mapping[str, Tenant] = field(default_factory=lambda: MappingProxyType({}))
    by_prefix: Mapping[str, Tenant] = field(default_factory=lambda: MappingProxyType({}))
    by_port: Mapping[int, Tenant] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, tenants: Iterable[Tenant]) -> TenantIndex:
        by_id: dict[str, Tenant] = {}
        by_subdomain: dict[str, Tenant] = {}
        by_prefix: dict[str, Tenant] = {}
        by_port: dict[int, Tenant] = {}
        for tenant in tenants:
            by_id[tenant.tenant_id] = tenant
            config = tenant.config
            if config.api_subdomain is not None:
                by_subdomain[config.api_subdomain] = tenant
            if config.cli_prefix is not None:
                by_prefix[config.cli_prefix] = tenant
            if config.mcp_port is not None:
                by_port[config.mcp_port] = tenant
        return cls(*(MappingProxyType(table) for table in (by_id, by_subdomain, by_prefix, by_port)))


class TenantRouter:
    """Finds the tenant of a request; None when its route names no tenant (the caller answers 404)."""

    def __init__(self, rules: RoutingRules, index: TenantIndex | None = None) -> None:
        self.rules = rules
        self.index = index or TenantIndex()
        self._suffix = f".{rules.base_domain}" if rules.base_domain else None

    def for_api(self, host: str | None, client_addr: str, forwarded_host: str | None = None) -> Tenant | None:
        """The tenant whose subdomain is the host's first label under the base domain."""
        label = self.api_label(host, client_addr, forwarded_host)
        return self.index.by_subdomain.get(label) if label is not None else None

    def api_label(self, host: str | None, client_addr: str, forwarded_host: str | None = None) -> str | None:
        """The label a request's host names under the base domain; None for any other host (the
        platform's own). X-Forwarded-Host counts only from a trusted proxy."""
        if forwarded_host and self.rules.is_trusted(client_addr):
            # The nearest proxy appends last; earlier entries came from whoever sent the request.
            host = forwarded_host.rsplit(",", 1)[-1].strip()
        return self.subdomain_of(host)

    def subdomain_of(self, host: str | None) -> str | None:
        """`tenant1` of `tenant1.api.company.com[:port]`; None for any other shape of host."""
        if not host or self._suffix is None or not host.isascii():
            return None  # lower() maps some non-ASCII letters onto ASCII ones (KELVIN SIGN -> k)
        name = host.lower()
        if name.startswith("["):  # an IPv6 literal is never a tenant's host
            return None
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
        name = name.removesuffix(".")  # a fully qualified name may end with a dot
        if not name.endswith(self._suffix):
            return None
        label = name[: -len(self._suffix)]
        return label if _SUBDOMAIN.fullmatch(label) else None

    def find(self, route: TenantRoute, client_addr: str) -> tuple[bool, Tenant | None]:
        """What a route as a channel saw it names: (False, None) for the platform's own route,
        (True, tenant) for a tenant's, (True, None) for a route naming a tenant there is none of."""
        kind = route.kind
        if kind is RouteKind.HOST:
            label = self.api_label(route.value, client_addr, route.forwarded_host)
            return (False, None) if label is None else (True, self.index.by_subdomain.get(label))
        if kind is RouteKind.PREFIX:
            return True, self.for_cli(route.value)
        if kind is RouteKind.PORT:
            return True, self.for_mcp_port(int(route.value)) if route.value.isdigit() else None
        return True, self.index.by_id.get(route.value)  # PATH: the {tenant} of /t/{tenant}/mcp

    def for_cli(self, prefix: str | None) -> Tenant | None:
        return self.index.by_prefix.get(prefix) if prefix else None

    def for_mcp_port(self, port: int) -> Tenant | None:
        return self.index.by_port.get(port)

    def for_mcp_path(self, path: str) -> Tenant | None:
        """The tenant of `/t/{tenant_id}/mcp`; None for other paths and unknown ids."""
        match = _MCP_PATH.fullmatch(path)
        return self.index.by_id.get(check_tenant_id(match.group(1))) if match else None
