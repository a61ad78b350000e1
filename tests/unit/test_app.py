"""The composition root: constructor validation, closed attributes, settings frozen while serving.

Serving tests bind 127.0.0.1 on ports the OS picks and keep state in a SQLite file under tmp_path.
"""

from __future__ import annotations

import gc
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from nexus import Nexus
from nexus.errors import ConfigurationError
from nexus.settings import ApiSettings
from nexus.workflow import Workflow, WorkflowBuilder


def add_workflow() -> Workflow:
    builder = WorkflowBuilder()
    builder.add_input("a", int)
    builder.add_input("b", int)
    builder.add_node("PythonCodeNode", "add", {"code": "result = a + b"})
    return builder.build()


def local_app(tmp_path: Path, **options: Any) -> Nexus:
    return Nexus(api_port=0, mcp_port=0, state_url=f"sqlite:///{tmp_path}/s.db", **options)


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


# -- constructor -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"api_port": -1}, "api_port must be a port number"),
        ({"api_port": 65536}, "api_port must be a port number"),
        ({"api_port": "8000"}, "api_port must be a port number"),
        ({"api_port": True}, "api_port must be a port number"),
        ({"mcp_port": 70000}, "mcp_port must be a port number"),
        ({"mcp_port": 3000.0}, "mcp_port must be a port number"),
        ({"api_port": 9000, "mcp_port": 9000}, "api_port and mcp_port must differ"),
        ({"rate_limit": 0}, "rate_limit must be a positive number"),
        ({"rate_limit": -10}, "rate_limit must be a positive number"),
        ({"rate_limit": 1.5}, "rate_limit must be a positive number"),
        ({"rate_limit": True}, "rate_limit must be a positive number"),
        ({"rate_limit": "60"}, "rate_limit must be a positive number"),
        ({"state_url": "nexus.db"}, "state_url must be a URL"),
        ({"state_url": 42}, "state_url must be a URL"),
        ({"redis_url": "localhost:6379"}, "redis_url must start with redis://"),
        ({"redis_url": "http://127.0.0.1:6379"}, "redis_url must start with redis://"),
    ],
)
def test_constructor_refuses_a_bad_option_with_configuration_error(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Nexus(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"api_port": 0, "mcp_port": 0},
        {"api_port": 65535, "mcp_port": 1},
        {"rate_limit": 1},
        {"redis_url": "redis://127.0.0.1:6379/0", "rate_limit": 60},
        {"redis_url": "rediss://cache.example:6380/1", "rate_limit": 60},
        {"state_url": "postgresql://postgres@127.0.0.1/test"},
    ],
)
def test_constructor_accepts_edge_values_and_keeps_them(options: dict[str, Any]) -> None:
    app = Nexus(**options)
    for name, value in options.items():
        assert getattr(app.options, name) == value


def test_constructor_defaults_serve_loopback_only_with_auth_off() -> None:
    options = Nexus().options
    assert (options.host, options.api_port, options.mcp_port) == ("127.0.0.1", 8000, 3000)
    assert (options.enable_auth, options.rate_limit, options.redis_url) == (False, None, None)
    assert options.state_url == "sqlite:///./nexus.db"


def test_non_string_redis_url_is_refused_with_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Nexus(redis_url=6379, rate_limit=60)  # type: ignore[arg-type]  # the mistake under test


# -- closed attributes -------------------------------------------------------------------------------


def test_setting_an_unknown_app_attribute_raises_attribute_error_naming_the_sections() -> None:
    app = Nexus()
    with pytest.raises(AttributeError, match="sections api, auth, mcp, monitoring"):
        app.rate_limit = 100
    assert app.options.rate_limit is None


def test_a_settings_section_cannot_be_replaced_wholesale() -> None:
    app = Nexus()
    section = app.api
    with pytest.raises(AttributeError):
        app.api = ApiSettings()
    assert app.api is section


def test_an_unknown_section_setting_raises_attribute_error_naming_the_valid_ones() -> None:
    app = Nexus()
    with pytest.raises(AttributeError, match="valid: max_body_bytes, docs_enabled, node_timeout_seconds"):
        app.api.max_body_size = 10


# -- registration ------------------------------------------------------------------------------------


def test_register_workflow_and_register_fill_the_same_catalog() -> None:
    app = Nexus()
    first = app.register_workflow("add", add_workflow(), description="Add", tags=["math"])
    assert (first.name, first.info.description, first.info.tags) == ("add", "Add", ("math",))
    with pytest.raises(ConfigurationError, match="already registered"):
        app.register("add", add_workflow())
    second = app.register("sum", add_workflow())
    with pytest.raises(ConfigurationError, match="already registered"):
        app.register_workflow("sum", add_workflow())
    assert second.info.input_schema == first.info.input_schema


def test_register_workflow_validates_like_register() -> None:
    app = Nexus()
    with pytest.raises(ConfigurationError, match="Invalid workflow name"):
        app.register_workflow("bad name", add_workflow())
    with pytest.raises(ConfigurationError, match="needs a built Workflow"):
        app.register_workflow("unbuilt", WorkflowBuilder())  # type: ignore[arg-type]  # under test


# -- serving -----------------------------------------------------------------------------------------


async def test_max_body_bytes_set_before_serving_is_enforced_with_413(tmp_path: Path) -> None:
    app = local_app(tmp_path)
    app.register("add", add_workflow())
    app.api.max_body_bytes = 64
    small = b'{"inputs": {"a": 2, "b": 40}}'
    large = b'{"inputs": {"a": 2, "b": 40}, "padding": "' + b"x" * 100 + b'"}'
    headers = {"content-type": "application/json"}
    async with app.serving() as running, httpx2.AsyncClient(base_url=running.api_url, timeout=10) as client:
        accepted = await client.post("/workflows/add/execute", content=small, headers=headers)
        refused = await client.post("/workflows/add/execute", content=large, headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["outputs"] == {"add": {"result": 42}}
    assert refused.status_code == 413
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "payload_too_large"


async def test_sections_are_frozen_while_serving_and_thawed_after_stop(tmp_path: Path) -> None:
    app = local_app(tmp_path)
    async with app.serving():
        for section, name, value in [
            (app.api, "max_body_bytes", 10),
            (app.auth, "api_key_cache_seconds", 1),
            (app.monitoring, "audit_max_batch", 8),
            (app.mcp, "server_name", "other"),
        ]:
            with pytest.raises(ConfigurationError, match="cannot change while the app is serving"):
                setattr(section, name, value)
    app.api.max_body_bytes = 10
    app.auth.api_key_cache_seconds = 1
    assert (app.api.max_body_bytes, app.auth.api_key_cache_seconds) == (10, 1)


async def test_serving_reports_where_it_listens(tmp_path: Path) -> None:
    app = local_app(tmp_path)
    async with app.serving() as running:
        assert running.api_port not in (0, running.mcp_port)
        assert running.api_url == f"http://127.0.0.1:{running.api_port}"
        assert running.mcp_url == f"http://127.0.0.1:{running.mcp_port}/mcp"
        async with httpx2.AsyncClient(timeout=10) as client:
            assert (await client.get(f"{running.api_url}/health")).status_code == 200


async def test_serving_an_app_that_is_already_serving_is_refused(tmp_path: Path) -> None:
    app = local_app(tmp_path)
    async with app.serving():
        with pytest.raises(ConfigurationError, match="already serving"):
            async with app.serving():
                pass
        with pytest.raises(ConfigurationError, match="already serving"):
            app.start_in_thread()
    async with app.serving() as again:  # after stop it may serve again
        assert again.api_port > 0


async def test_bad_setting_refuses_to_serve_with_configuration_error(tmp_path: Path) -> None:
    app = local_app(tmp_path)
    app.mcp.path = "mcp"
    with pytest.raises(ConfigurationError, match=r"app\.mcp\.path"):
        async with app.serving():
            pass
    app.mcp.path = "/tools"
    async with app.serving() as running:
        assert running.mcp_url.endswith("/tools")


async def test_failed_validation_at_start_leaves_every_section_changeable(tmp_path: Path) -> None:
    app = local_app(tmp_path)
    app.api.max_body_bytes = 0
    with pytest.raises(ConfigurationError, match=r"app\.api\.max_body_bytes"):
        async with app.serving():
            pass
    app.auth.api_key_cache_seconds = 1  # auth is frozen before api fails validation


async def test_port_in_use_is_a_configuration_error_and_the_app_can_serve_once_it_is_free(
    tmp_path: Path,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        busy = holder.getsockname()[1]
        app = Nexus(api_port=busy, mcp_port=0, state_url=f"sqlite:///{tmp_path}/s.db")
        with pytest.raises(ConfigurationError, match=r"Cannot listen on 127\.0\.0\.1"):
            async with app.serving():
                pass
        app.api.docs_enabled = False  # sections were thawed by the failure
    async with app.serving() as running:
        assert running.api_port == busy


async def test_busy_mcp_port_leaves_no_api_socket_open(tmp_path: Path, occupied_port: int) -> None:
    app = Nexus(api_port=0, mcp_port=occupied_port, state_url=f"sqlite:///{tmp_path}/s.db")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ConfigurationError, match=r"Cannot listen on 127\.0\.0\.1"):
            async with app.serving():
                pass
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []


def test_redis_url_without_a_rate_limit_is_refused_rather_than_ignored() -> None:
    with pytest.raises(ConfigurationError, match="rate_limit"):
        Nexus(redis_url="redis://127.0.0.1:6379/0")


@pytest.mark.parametrize("name", ["enable_auth", "enable_monitoring"])
def test_switches_must_be_booleans_not_truthy_strings(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Nexus(**{name: "no"})


@pytest.mark.parametrize(
    ("name", "value"),
    [("require_reauth_for", ["admin"]), ("session_duration", 3600), ("api_key_cache_seconds", 1.0)],
)
def test_an_identity_setting_with_auth_off_is_refused_rather_than_ignored(
    name: str, value: object, tmp_path: Path
) -> None:
    app = Nexus(api_port=0, mcp_port=0, state_url=f"sqlite:///{tmp_path}/off.db")
    setattr(app.auth, name, value)
    with pytest.raises(ConfigurationError, match=f"app.auth.{name} is set but enable_auth=False"):
        app.start_in_thread()
    assert not app.auth.__dict__.get("_frozen", False)  # nothing left frozen by the refusal


def test_state_and_redis_urls_left_out_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_STATE_URL", "postgresql://db:5432/nexus")
    monkeypatch.setenv("NEXUS_REDIS_URL", "redis://127.0.0.1:6379/3")
    app = Nexus(enable_auth=True)
    assert app.options.state_url == "postgresql://db:5432/nexus"
    assert app.options.redis_url == "redis://127.0.0.1:6379/3"
    # Given ones win over the environment.
    given = Nexus(enable_auth=True, state_url="sqlite:///./x.db", redis_url="redis://127.0.0.1/1")
    assert (given.options.state_url, given.options.redis_url) == ("sqlite:///./x.db", "redis://127.0.0.1/1")


def test_without_the_environment_state_is_the_embedded_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEXUS_STATE_URL", raising=False)
    monkeypatch.delenv("NEXUS_REDIS_URL", raising=False)
    app = Nexus()
    assert (app.options.state_url, app.options.redis_url) == ("sqlite:///./nexus.db", None)


def test_a_redis_url_from_the_environment_that_nothing_would_use_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEXUS_REDIS_URL", "redis://127.0.0.1:6379/3")
    with pytest.raises(ConfigurationError, match="NEXUS_REDIS_URL"):
        Nexus()


def test_the_tenant_base_domain_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_BASE_DOMAIN", "api.company.test")
    assert Nexus().tenancy.base_domain == "api.company.test"
    monkeypatch.delenv("NEXUS_BASE_DOMAIN")
    assert Nexus().tenancy.base_domain is None
