"""`app.api.enable_clustering` needs state every node shares: refused at start without it.

Serving tests bind 127.0.0.1 on ports the OS picks; the refusals come before any backend is opened.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nexus import Nexus
from nexus.channels.http import health_check
from nexus.core.cluster import ClusterNode, ClusterView
from nexus.core.types import Channel, Invocation
from nexus.errors import ConfigurationError
from nexus.settings import ApiSettings, Options, check_clustering

PG = "postgresql://nexus:secret-password@db.internal:5432/nexus"
REDIS = "redis://:redis-password@cache.internal:6379/0"


def _options(**changes: Any) -> Options:
    base: dict[str, Any] = {
        "api_port": 0,
        "mcp_port": 0,
        "host": "127.0.0.1",
        "enable_auth": True,
        "enable_monitoring": True,
        "rate_limit": None,
        "state_url": PG,
        "redis_url": REDIS,
        "title": "Nexus",
    }
    return Options(**{**base, **changes})


def _clustering() -> ApiSettings:
    api = ApiSettings()
    api.enable_clustering = True
    return api


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"state_url": "sqlite:///./nexus.db"}, ["state_url must be a postgresql:// URL", "it is sqlite:"]),
        ({"redis_url": None}, ["redis_url must name the Redis"]),
        (
            {"state_url": "sqlite:///./nexus.db", "redis_url": None},
            ["state_url must be a postgresql:// URL", "redis_url must name the Redis"],
        ),
    ],
    ids=["sqlite-with-redis", "postgres-without-redis", "neither"],
)
def test_clustering_without_shared_state_is_refused_naming_what_is_missing(
    changes: dict[str, Any], named: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        check_clustering(_options(**changes), _clustering())

    message = str(raised.value)
    assert message.startswith("app.api.enable_clustering=True needs shared state: ")
    assert all(part in message for part in named), message
    assert "password" not in message


def test_clustering_on_postgres_and_redis_is_accepted_and_no_clustering_needs_neither() -> None:
    check_clustering(_options(), _clustering())
    check_clustering(_options(state_url="sqlite:///./nexus.db", redis_url=None), ApiSettings())


def test_an_app_with_clustering_on_sqlite_does_not_start(tmp_path: Path) -> None:
    app = Nexus(
        api_port=0,
        mcp_port=0,
        state_url=f"sqlite:///{tmp_path}/state.db",
        redis_url="redis://127.0.0.1:9/0",
        rate_limit=10,
    )
    app.api.enable_clustering = True
    app.api.health_check_interval = 0.5

    with pytest.raises(ConfigurationError, match="state_url must be a postgresql:// URL"):
        app.start_in_thread()

    assert not (tmp_path / "state.db").exists()  # refused before any backend was opened
    app.api.enable_clustering = False  # not serving: the settings can change again


class _Served:
    """The one pipeline call the health detail makes: which workflows the route is served."""

    def served(self, invocation: Invocation) -> list[object]:
        return []


async def test_the_cluster_view_is_shown_on_the_platforms_route_only() -> None:
    """The nodes' internal addresses are the platform's; a tenant's members never see them."""
    now = datetime.now(UTC)
    node = ClusterNode("node-1", "10.0.0.5:8000", "10.0.0.5:3000", "0.1.0", now, ready=True, last_seen=now)

    async def view() -> ClusterView:
        return ClusterView("node-1", (node,))

    async def ready() -> bool:
        return True

    check = health_check(_Served(), ready, "0.1.0", cluster=view)  # type: ignore[arg-type]
    call = Invocation(request_id="r", channel=Channel.API, workflow="_health", inputs={})
    platform = await check(call)
    tenant = await check(replace(call, tenant_id="acme"))
    assert platform["cluster"]["nodes"][0]["api"] == "10.0.0.5:8000"
    assert "cluster" not in tenant
    assert tenant["ready"] is True
