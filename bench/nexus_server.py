"""Nexus under test: one `add` workflow, served by `app.start()` in this process.

Run as `python -m bench.nexus_server --api-port P --mcp-port Q --state-dir D [--profile P]`.
`defaults` is Nexus as constructed. `auth` turns on auth, RBAC (50 roles), ABAC (policies that
apply to `add` and hold), a never-reached rate limit and monitoring, and writes the API key to
D/api_key before the ports open (the harness waits for the ports, then reads it); the user `bench`
exists too, for the harness to log in as (the session-token row). Key and user hold the role
`bench`, allowed through the workflow's tag. `full` (or `--full`) adds tenancy: key and user are
members of the one tenant, "bench", and `add` is served on its route only (REST: the Host
`bench.api.bench`), counted against quotas that are never reached. Both write a platform key to
D/ops_key that may read /metrics, where the harness checks that the full server's quotas count.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
from pathlib import Path

from nexus import Nexus
from nexus.enterprise.auth import ABACPolicyEngine, RBACManager
from nexus.enterprise.tenancy import TenantManager
from nexus.workflow import WorkflowBuilder

# A rate limit per minute far above what one process can serve, so the limiter runs but never denies.
UNREACHED_RATE_LIMIT = 10_000_000
# The user the harness logs in as, for the session-token row (a channel token from a login session).
BENCH_USER = "bench"
BENCH_PASSWORD = "bench-password-not-secret"  # noqa: S105  # a throwaway bench account
BENCH_ROLE = "bench"
# The platform key's role: reading /metrics (the tenant's quota use), nothing else.
OPS_ROLE = "bench-ops"
# The workflow's tags and metadata: the bench role is granted through a tag, policies read the level.
TAGS = ("arithmetic", "bench-suite")
METADATA = {"classification_level": 1, "department": "research"}
UNRELATED_ROLES = 47
# The one tenant: REST calls reach it by the subdomain `bench` under the base domain.
TENANT = "bench"
BASE_DOMAIN = "api.bench"
TENANT_HOST = f"{TENANT}.{BASE_DOMAIN}"
# Counted on every call and never reached: an hour of requests far above what one process serves,
# and more workflows at once than the harness's connections can run.
TENANT_QUOTAS = {"api_requests_per_hour": 100_000_000, "concurrent_workflows": 10_000}


SEALED = "sealed"


class Profile(enum.StrEnum):
    """What the served app turns on."""

    DEFAULTS = "defaults"
    AUTH = "auth"
    """Auth (API keys, sessions) + RBAC + ABAC + rate limit + monitoring; no tenancy."""
    FULL = "full"
    """`auth` + tenancy: moderate isolation, subdomain routing, quotas."""


def build_rbac() -> RBACManager:
    """50 roles: the bench role (inheriting a base role), the metrics reader, and 47 with
    permissions that never match."""
    rbac = RBACManager()
    rbac.create_role("bench-base", ["api:read:workflows", "api:read:health"])
    rbac.create_role(
        BENCH_ROLE, ["cli:execute:arithmetic", "api:execute:arithmetic"], inherits=["bench-base"]
    )
    rbac.create_role(OPS_ROLE, ["api:read:metrics"])
    domains = ("finance", "sales", "hr", "ops", "legal", "support")
    for i in range(UNRELATED_ROLES):
        domain = domains[i % len(domains)]
        permissions = [f"api:execute:{domain}_report_{j:02d}" for j in range(6)]
        permissions += [f"mcp:*:{domain}_tools", f"cli:execute:{domain}_etl", f"*:read:{domain}_dashboards"]
        rbac.create_role(f"{domain}-{i:02d}", permissions)
    return rbac


def build_abac() -> ABACPolicyEngine:
    """Three policies that apply to `add` over the API and hold, and two that apply elsewhere."""
    abac = ABACPolicyEngine()
    applying = {
        # All day, so the row never depends on the hour it runs at.
        "service_hours": (
            "current_time between 00:00 and 23:59:59",
            ["api", "cli"],
            ["arithmetic"],
            "permit",
        ),
        # API keys carry no clearance attribute; the key's roles and the workflow's metadata stand in.
        "data_access_control": (
            f"'{BENCH_ROLE}' in user.roles and resource.classification_level <= 2",
            ["*"],
            ["bench-suite", "classified_workflows"],
            "permit",
        ),
        "blocked_addresses": ("client_address in ['203.0.113.66', '203.0.113.67']", ["*"], ["*"], "deny"),
        "location_restricted": ("user.location in ['US', 'EU']", ["mcp"], ["compliance_tools"], "permit"),
        "business_hours_only": (
            "current_time between 09:00 and 17:00",
            ["api", "cli"],
            ["sensitive_workflows", "financial_data"],
            "permit",
        ),
    }
    for name, (condition, channels, resources, effect) in applying.items():
        abac.add_policy(
            name, {"condition": condition, "channels": channels, "resources": resources, "effect": effect}
        )
    return abac


def build_app(api_port: int, mcp_port: int, state_dir: Path, *, profile: Profile) -> Nexus:
    """Build the app and register `add`; past `defaults`, mint the bench API key into
    state_dir/api_key."""
    state_url = f"sqlite:///{state_dir / 'bench.db'}"
    if profile is Profile.DEFAULTS:
        app = Nexus(api_port=api_port, mcp_port=mcp_port, state_url=state_url)
    else:
        app = Nexus(
            api_port=api_port,
            mcp_port=mcp_port,
            state_url=state_url,
            enable_auth=True,
            rate_limit=UNREACHED_RATE_LIMIT,
            enable_monitoring=True,
        )
    tenancy = profile is Profile.FULL
    if tenancy:
        app.tenancy.manager = TenantManager(isolation_level="moderate", resource_quotas=TENANT_QUOTAS)
    if profile is not Profile.DEFAULTS:
        # Not NEXUS_BASE_DOMAIN: whether the rows route by subdomain is the profile's to say.
        app.tenancy.base_domain = BASE_DOMAIN if tenancy else None
    builder = WorkflowBuilder()
    builder.add_node("PythonCodeNode", "add", {"code": "result = a + b"})
    builder.add_input("a", int)
    builder.add_input("b", int)
    app.register(
        "add",
        builder.build(),
        description="Add two integers.",
        tags=TAGS,
        metadata=METADATA,
        tenant_scoped=tenancy,
    )
    if profile is not Profile.DEFAULTS:
        # No role of the bench key may run "sealed": the harness checks it is refused before timing,
        # so the authorized rows cannot pass with authorization silently off.
        app.register(SEALED, builder.build(), description="Not for the bench key.", tenant_scoped=tenancy)
        app.set_rbac_manager(build_rbac())
        app.set_abac_engine(build_abac())
        # Long enough that no token expires during a run; the harness logs in once.
        app.auth.access_token_duration = 3600
        asyncio.run(_populate(app, state_dir, tenancy=tenancy))
    return app


async def _populate(app: Nexus, state_dir: Path, *, tenancy: bool) -> None:
    """The bench key and user (with `tenancy`, members of the one tenant, created here) and the
    platform's metrics key; the keys' plaintexts go to state_dir/api_key and state_dir/ops_key."""
    tenants = [TENANT] if tenancy else []
    if tenancy:
        await app.create_tenant(TENANT, "Bench", {"api_subdomain": TENANT})
    issued = await app.create_api_key("bench", roles=[BENCH_ROLE], tenants=tenants)
    await app.create_user(BENCH_USER, BENCH_PASSWORD, roles=[BENCH_ROLE], tenants=tenants)
    ops = await app.create_api_key("bench-ops", roles=[OPS_ROLE])
    (state_dir / "api_key").write_text(issued.plaintext)
    (state_dir / "ops_key").write_text(ops.plaintext)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.nexus_server")
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--mcp-port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument(
        "--profile",
        type=Profile,
        choices=list(Profile),
        default=Profile.DEFAULTS,
        help="defaults; auth: auth + RBAC + ABAC + rate limit + monitoring; full: auth + tenancy "
        "(audit is always on)",
    )
    parser.add_argument(
        "--full", dest="profile", action="store_const", const=Profile.FULL, help="--profile full"
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    app = build_app(args.api_port, args.mcp_port, args.state_dir, profile=args.profile)
    app.start()


if __name__ == "__main__":
    main()
