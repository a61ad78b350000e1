"""`app.api.enable_clustering` needs state every node shares: refused at start without it.

Serving tests bind 127.0.0.1 on ports the OS picks; the refusals come before any backend is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nexus import Nexus
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
