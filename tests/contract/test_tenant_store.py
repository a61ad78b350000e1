"""The `TenantStore` contract, run against memory, SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from tests.conftest import BACKENDS
from tests.contract.identity_state import open_identity_state

from nexus.backends.memory import MemoryTenantStore
from nexus.backends.sql import open_state
from nexus.backends.sql.engine import create_state_engine, normalize_url
from nexus.backends.sql.migration import alembic_config, head_revision
from nexus.backends.sql.schema import users
from nexus.core.tenancy.model import Tenant, TenantConfig, TenantStatus
from nexus.core.tenancy.ports import TenantStore
from nexus.errors import ConfigurationError, TenantConflictError

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
RACERS = 6


def make_tenant(tenant_id: str = "acme", **config: str | int) -> Tenant:
    return Tenant(tenant_id, f"Tenant {tenant_id}", TenantConfig.from_mapping(config), created_at=T0)


@pytest.fixture(params=BACKENDS)
async def tenants(request: pytest.FixtureRequest) -> AsyncIterator[TenantStore]:
    """The tenant store of one backend (memory, sqlite, postgres), empty."""
    if request.param == "memory":
        yield MemoryTenantStore()
        return
    state = await open_identity_state(request.param, request)
    try:
        # The shared PostgreSQL database keeps what earlier tests stored; a SQLite copy starts empty.
        async with state.engine.begin() as connection:
            await connection.execute(text("DELETE FROM tenants"))
        yield state.tenants
    finally:
        await state.close()


async def test_added_tenant_is_returned_by_get_with_every_field(tenants: TenantStore) -> None:
    config = TenantConfig(
        api_subdomain="client001",
        cli_prefix="client-001",
        mcp_port=9001,
        quota_profile="enterprise_small",
        compliance_level="hipaa_sox",
    )
    tenant = Tenant(
        "client001",
        "Client One, Inc.",
        config,
        created_at=T0,
        status=TenantStatus.SUSPENDED,
        suspended_at=T0 + timedelta(days=2, microseconds=7),
    )
    await tenants.add(tenant)

    found = await tenants.get("client001")

    assert found == tenant
    assert found is not None
    assert found.config.to_mapping() == config.to_mapping()
    assert found.status is TenantStatus.SUSPENDED
    assert (found.created_at.tzinfo, found.suspended_at) == (UTC, T0 + timedelta(days=2, microseconds=7))


async def test_a_tenant_without_config_comes_back_with_an_empty_config(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("bare"))

    found = await tenants.get("bare")

    assert found is not None
    assert found.config == TenantConfig()
    assert (found.status, found.suspended_at, found.is_active) == (TenantStatus.ACTIVE, None, True)


async def test_created_at_with_another_offset_comes_back_as_the_same_instant_in_utc(
    tenants: TenantStore,
) -> None:
    plus_two = timezone(timedelta(hours=2))
    await tenants.add(
        Tenant("acme", "Acme", TenantConfig(), created_at=datetime(2025, 3, 1, 14, 0, tzinfo=plus_two))
    )

    found = await tenants.get("acme")

    assert found is not None
    assert found.created_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert found.created_at.tzinfo == UTC


async def test_get_of_an_unknown_tenant_returns_none(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("acme"))

    assert await tenants.get("globex") is None


async def test_list_returns_every_tenant_by_id(tenants: TenantStore) -> None:
    for tenant_id in ("initech", "acme", "globex_2", "globex"):
        await tenants.add(make_tenant(tenant_id))

    assert [tenant.tenant_id for tenant in await tenants.list()] == ["acme", "globex", "globex_2", "initech"]


async def test_list_of_an_empty_store_is_empty(tenants: TenantStore) -> None:
    assert list(await tenants.list()) == []


async def test_a_taken_tenant_id_is_refused_and_the_original_kept(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("acme", api_subdomain="acme"))

    with pytest.raises(TenantConflictError, match="tenant with id 'acme' already exists"):
        await tenants.add(make_tenant("acme", api_subdomain="acme-two", cli_prefix="acme2"))

    assert [tenant.config.to_mapping() for tenant in await tenants.list()] == [{"api_subdomain": "acme"}]


@pytest.mark.parametrize(
    ("route", "value", "shown"),
    [
        ("api_subdomain", "shared", "'shared'"),
        ("cli_prefix", "shared", "'shared'"),
        ("mcp_port", 9100, "9100"),
    ],
)
async def test_a_route_of_another_tenant_is_refused_naming_it_and_nothing_is_stored(
    tenants: TenantStore, route: str, value: str | int, shown: str
) -> None:
    first = {"api_subdomain": "first", "cli_prefix": "first", "mcp_port": 9001, route: value}
    second = {"api_subdomain": "second", "cli_prefix": "second", "mcp_port": 9002, route: value}
    await tenants.add(make_tenant("first", **first))

    with pytest.raises(TenantConflictError, match=f"The {route} {shown} is already another tenant's"):
        await tenants.add(make_tenant("second", **second))

    assert await tenants.get("second") is None
    assert [tenant.tenant_id for tenant in await tenants.list()] == ["first"]


async def test_tenants_without_routes_never_conflict_with_each_other(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("acme"))
    await tenants.add(make_tenant("globex", quota_profile="standard"))
    await tenants.add(make_tenant("initech", api_subdomain="initech"))

    assert [tenant.tenant_id for tenant in await tenants.list()] == ["acme", "globex", "initech"]


async def test_one_tenants_value_may_be_another_tenants_value_on_a_different_route(
    tenants: TenantStore,
) -> None:
    await tenants.add(make_tenant("acme", api_subdomain="shared"))

    await tenants.add(make_tenant("globex", cli_prefix="shared"))

    found = await tenants.get("globex")
    assert found is not None
    assert found.config.cli_prefix == "shared"


DELETED_AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


async def test_delete_removes_the_tenant_and_frees_its_routes_but_never_its_id(tenants: TenantStore) -> None:
    """Keys, sessions and audit records name tenants by id: a new tenant under a deleted one's id
    would inherit them, so the id stays taken; the routes go to whoever asks next."""
    await tenants.add(make_tenant("acme", api_subdomain="acme", cli_prefix="acme", mcp_port=9001))

    assert await tenants.delete("acme", DELETED_AT) is True
    assert await tenants.delete("acme", DELETED_AT) is False
    assert await tenants.get("acme") is None
    assert await tenants.list() == []
    assert await tenants.set_suspended("acme", DELETED_AT) is False
    assert await tenants.set_workflow_shared("acme", "report", True) is None

    await tenants.add(make_tenant("globex", api_subdomain="acme", cli_prefix="acme", mcp_port=9001))
    with pytest.raises(TenantConflictError, match="never reused"):
        await tenants.add(make_tenant("acme"))
    found = await tenants.get("globex")
    assert found is not None
    assert (found.config.api_subdomain, found.config.cli_prefix, found.config.mcp_port) == (
        "acme",
        "acme",
        9001,
    )


async def test_delete_of_an_unknown_tenant_returns_false_and_keeps_the_others(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("acme"))

    assert await tenants.delete("globex", DELETED_AT) is False

    assert [tenant.tenant_id for tenant in await tenants.list()] == ["acme"]


async def test_suspend_records_the_time_and_reactivate_clears_it(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("acme", api_subdomain="acme"))
    at = datetime(2025, 3, 2, 9, 30, 0, 42, tzinfo=timezone(timedelta(hours=-5)))

    assert await tenants.set_suspended("acme", at) is True
    suspended = await tenants.get("acme")
    assert suspended is not None
    assert (suspended.status, suspended.suspended_at, suspended.is_active) == (
        TenantStatus.SUSPENDED,
        at,
        False,
    )
    assert suspended.suspended_at is not None
    assert suspended.suspended_at.tzinfo == UTC

    assert await tenants.set_suspended("acme", None) is True
    active = await tenants.get("acme")
    assert active == make_tenant("acme", api_subdomain="acme")


async def test_suspending_again_records_the_new_time(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("acme"))

    await tenants.set_suspended("acme", T0)
    await tenants.set_suspended("acme", T0 + timedelta(hours=1))

    found = await tenants.get("acme")
    assert found is not None
    assert (found.status, found.suspended_at) == (TenantStatus.SUSPENDED, T0 + timedelta(hours=1))


async def test_suspending_an_unknown_tenant_returns_false_and_adds_nothing(tenants: TenantStore) -> None:
    assert await tenants.set_suspended("ghost", T0) is False
    assert await tenants.set_suspended("ghost", None) is False

    assert list(await tenants.list()) == []


async def test_suspending_one_tenant_leaves_the_others_active(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("acme"))
    await tenants.add(make_tenant("globex"))

    await tenants.set_suspended("acme", T0)

    assert [(tenant.tenant_id, tenant.status) for tenant in await tenants.list()] == [
        ("acme", TenantStatus.SUSPENDED),
        ("globex", TenantStatus.ACTIVE),
    ]


async def test_naive_datetimes_are_rejected(tenants: TenantStore) -> None:
    naive = datetime(2025, 3, 1, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await tenants.add(
            Tenant("acme", "Acme", TenantConfig(), T0, status=TenantStatus.SUSPENDED, suspended_at=naive)
        )
    await tenants.add(make_tenant("globex"))

    with pytest.raises(ValueError, match="timezone-aware"):
        await tenants.set_suspended("globex", naive)

    assert [(tenant.tenant_id, tenant.status) for tenant in await tenants.list()] == [("globex", "active")]


async def test_concurrent_adds_of_one_id_let_exactly_one_win(tenants: TenantStore) -> None:
    outcomes = await asyncio.gather(
        *(tenants.add(make_tenant("acme", mcp_port=9000 + n)) for n in range(RACERS)), return_exceptions=True
    )

    _assert_one_winner(outcomes, "'acme'")
    assert len(await tenants.list()) == 1


async def test_concurrent_adds_of_one_route_let_exactly_one_win(tenants: TenantStore) -> None:
    outcomes = await asyncio.gather(
        *(tenants.add(make_tenant(f"t{n}", api_subdomain="shared")) for n in range(RACERS)),
        return_exceptions=True,
    )

    _assert_one_winner(outcomes, "'shared'")
    assert len(await tenants.list()) == 1


async def test_concurrent_adds_from_two_nodes_on_one_database_let_exactly_one_win(state_url: str) -> None:
    node_a, node_b = await open_state(state_url), await open_state(state_url)
    try:
        nodes = (node_a.tenants, node_b.tenants)
        outcomes = await asyncio.gather(
            *(nodes[n % 2].add(make_tenant("acme", cli_prefix=f"acme{n}")) for n in range(RACERS)),
            return_exceptions=True,
        )

        _assert_one_winner(outcomes, "'acme'")
        assert [tenant.tenant_id for tenant in await node_b.tenants.list()] == ["acme"]
        assert await node_b.tenants.set_suspended("acme", T0) is True
        found = await node_a.tenants.get("acme")
        assert found is not None
        assert found.suspended_at == T0
    finally:
        await node_a.close()
        await node_b.close()


def test_a_conflict_is_a_configuration_error_answered_409_and_exit_65() -> None:
    conflict = TenantConflictError("A tenant with id 'acme' already exists.")
    assert isinstance(conflict, ConfigurationError)
    assert (conflict.code, conflict.http_status, conflict.exit_code, conflict.mcp) == (
        "tenant_conflict",
        409,
        65,
        "tool_error",
    )


# -- workflows shared with a tenant ---------------------------------------------------------------------


async def test_a_tenant_added_with_shared_workflows_comes_back_with_them(tenants: TenantStore) -> None:
    await tenants.add(replace(make_tenant("acme"), shared_workflows=frozenset({"report", "billing-v2"})))
    await tenants.add(make_tenant("globex"))

    acme, globex = await tenants.get("acme"), await tenants.get("globex")

    assert acme is not None
    assert acme.shared_workflows == frozenset({"report", "billing-v2"})
    assert globex is not None
    assert globex.shared_workflows == frozenset()
    assert [tenant.shared_workflows for tenant in await tenants.list()] == [
        frozenset({"report", "billing-v2"}),
        frozenset(),
    ]


async def test_sharing_adds_the_name_once_and_unsharing_takes_it_out(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("acme", api_subdomain="acme"))

    first = await tenants.set_workflow_shared("acme", "report", True)
    again = await tenants.set_workflow_shared("acme", "report", True)
    both = await tenants.set_workflow_shared("acme", "billing", True)

    assert first is not None
    assert first.shared_workflows == frozenset({"report"})
    assert again is not None
    assert again.shared_workflows == frozenset({"report"})
    assert both is not None
    assert both.shared_workflows == frozenset({"report", "billing"})
    stored = await tenants.get("acme")
    assert stored == both
    assert stored is not None
    assert stored.config.api_subdomain == "acme"

    taken_back = await tenants.set_workflow_shared("acme", "report", False)
    absent = await tenants.set_workflow_shared("acme", "never-shared", False)

    assert taken_back is not None
    assert taken_back.shared_workflows == frozenset({"billing"})
    assert absent is not None
    assert absent.shared_workflows == frozenset({"billing"})
    found = await tenants.get("acme")
    assert found is not None
    assert found.shared_workflows == frozenset({"billing"})


async def test_sharing_with_an_unknown_tenant_returns_none_and_adds_nothing(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("acme"))

    assert await tenants.set_workflow_shared("ghost", "report", True) is None
    assert await tenants.set_workflow_shared("ghost", "report", False) is None

    assert [tenant.tenant_id for tenant in await tenants.list()] == ["acme"]


@pytest.mark.parametrize("name", ["", "9lives", "two words", "a" * 65, "drop;table"])
async def test_a_name_no_workflow_could_have_is_refused_and_nothing_is_stored(
    tenants: TenantStore, name: str
) -> None:
    await tenants.add(make_tenant("acme"))

    with pytest.raises(ConfigurationError, match="workflow names"):
        await tenants.set_workflow_shared("acme", name, True)

    found = await tenants.get("acme")
    assert found is not None
    assert found.shared_workflows == frozenset()


async def test_suspending_and_resuming_keep_the_shared_workflows(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("acme"))
    await tenants.set_workflow_shared("acme", "report", True)

    await tenants.set_suspended("acme", T0)
    suspended = await tenants.get("acme")
    await tenants.set_suspended("acme", None)
    resumed = await tenants.get("acme")

    assert suspended is not None
    assert (suspended.status, suspended.shared_workflows) == (TenantStatus.SUSPENDED, frozenset({"report"}))
    assert resumed is not None
    assert resumed.shared_workflows == frozenset({"report"})


async def test_concurrent_shares_with_one_tenant_are_all_kept(tenants: TenantStore) -> None:
    await tenants.add(make_tenant("acme"))

    await asyncio.gather(*(tenants.set_workflow_shared("acme", f"flow{n}", True) for n in range(RACERS)))

    found = await tenants.get("acme")
    assert found is not None
    assert found.shared_workflows == frozenset(f"flow{n}" for n in range(RACERS))


async def test_concurrent_shares_from_two_nodes_on_one_database_are_all_kept(state_url: str) -> None:
    node_a, node_b = await open_state(state_url), await open_state(state_url)
    try:
        async with node_a.engine.begin() as connection:
            await connection.execute(text("DELETE FROM tenants"))
        await node_a.tenants.add(make_tenant("acme"))
        nodes = (node_a.tenants, node_b.tenants)
        await asyncio.gather(
            *(nodes[n % 2].set_workflow_shared("acme", f"flow{n}", True) for n in range(RACERS))
        )
        await node_b.tenants.set_workflow_shared("acme", "flow0", False)

        found = await node_a.tenants.get("acme")
    finally:
        await node_a.close()
        await node_b.close()

    assert found is not None
    assert found.shared_workflows == frozenset(f"flow{n}" for n in range(1, RACERS))


def _assert_one_winner(outcomes: list[BaseException | None], taken: str) -> None:
    assert sum(outcome is None for outcome in outcomes) == 1, outcomes
    losers = [outcome for outcome in outcomes if outcome is not None]
    assert all(isinstance(loser, TenantConflictError) for loser in losers), losers
    assert all(taken in str(loser) for loser in losers), losers


def _upgrade_to_0002(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "0002")


async def test_a_database_at_revision_0002_gains_the_tenants_table_and_keeps_its_data(state_url: str) -> None:
    engine = create_state_engine(normalize_url(state_url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_to_0002)
            # The columns revision 0002 has (the store of today writes later ones too).
            row = {
                "user_id": "u1",
                "username": "alice",
                "username_key": "alice",
                "source": "local",
                "roles": '["admin"]',
                "attributes": "{}",
                "disabled": False,
                "created_at": T0,
            }
            await connection.execute(users.insert(), row)
    finally:
        await engine.dispose()

    state = await open_state(state_url)
    try:
        async with state.engine.connect() as connection:
            revision = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        await state.tenants.add(make_tenant("acme", api_subdomain="acme"))
        assert [tenant.tenant_id for tenant in await state.tenants.list()] == ["acme"]
        user = await state.users.get("u1")
    finally:
        await state.close()

    assert revision == head_revision()
    assert user is not None
    assert user.roles == frozenset({"admin"})
