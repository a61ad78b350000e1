"""`PrometheusMonitoring` checks its arguments at once; `app.monitoring.backend` is refused at start
when it would do nothing or collide with the app's own ports."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from nexus import Nexus
from nexus.enterprise.monitoring import PrometheusMonitoring
from nexus.errors import ConfigurationError


def test_the_documents_arguments_are_kept() -> None:
    backend = PrometheusMonitoring(metrics_port=9090, enable_traces=True, enable_logs=True)
    assert (backend.metrics_port, backend.enable_traces, backend.enable_logs) == (9090, True, True)
    assert (backend.traces_endpoint, backend.service_name, backend.log_stream) == (None, "nexus", None)


def test_port_is_the_same_setting_as_metrics_port() -> None:
    assert PrometheusMonitoring(port=9090).metrics_port == 9090
    assert PrometheusMonitoring(9090, port=9090).metrics_port == 9090
    with pytest.raises(ConfigurationError, match="port=9091 and metrics_port=9090"):
        PrometheusMonitoring(metrics_port=9090, port=9091)


def test_defaults_serve_metrics_on_the_api_port_only() -> None:
    backend = PrometheusMonitoring()
    assert (backend.metrics_port, backend.enable_traces, backend.enable_logs) == (None, False, False)


def test_it_cannot_be_changed_after_construction() -> None:
    backend = PrometheusMonitoring(metrics_port=9090)
    with pytest.raises(AttributeError):
        backend.metrics_port = 9091  # type: ignore[misc]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"metrics_port": -1}, "metrics_port must be a port number"),
        ({"metrics_port": 65536}, "metrics_port must be a port number"),
        ({"metrics_port": "9090"}, "metrics_port must be a port number"),
        ({"metrics_port": True}, "metrics_port must be a port number"),
        ({"port": 9.5}, "metrics_port must be a port number"),
        ({"enable_traces": "yes"}, "enable_traces must be True or False"),
        ({"enable_logs": 1}, "enable_logs must be True or False"),
        ({"enable_traces": True, "traces_endpoint": "jaeger:4318"}, "traces_endpoint must be an http"),
        ({"enable_traces": True, "traces_endpoint": "ftp://jaeger/"}, "traces_endpoint must be an http"),
        ({"enable_traces": True, "traces_endpoint": 4318}, "traces_endpoint must be an http"),
        ({"traces_endpoint": "http://jaeger:4318"}, "traces_endpoint is for traces"),
        ({"service_name": "billing"}, "service_name is for traces"),
        ({"enable_traces": True, "service_name": " "}, "service_name must be a non-empty string"),
        ({"enable_logs": True, "log_stream": "stderr"}, "log_stream must be a text stream"),
        ({"log_stream": io.StringIO()}, "log_stream is set but enable_logs=False"),
    ],
)
def test_an_argument_that_cannot_be_honoured_is_refused_at_construction(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        PrometheusMonitoring(**arguments)


def test_tracing_and_logging_arguments_are_accepted_with_their_switch() -> None:
    stream = io.StringIO()
    backend = PrometheusMonitoring(
        enable_traces=True,
        enable_logs=True,
        traces_endpoint="https://collector.example:4318/v1/traces",
        service_name="billing",
        log_stream=stream,
    )
    assert (backend.traces_endpoint, backend.service_name, backend.log_stream) == (
        "https://collector.example:4318/v1/traces",
        "billing",
        stream,
    )


def _app(tmp_path: Path, **options: Any) -> Nexus:
    return Nexus(api_port=18000, mcp_port=13000, state_url=f"sqlite:///{tmp_path}/s.db", **options)


async def test_a_backend_with_monitoring_off_is_refused_at_start(tmp_path: Path) -> None:
    app = _app(tmp_path, enable_monitoring=False)
    app.monitoring.backend = PrometheusMonitoring(enable_traces=True)
    with pytest.raises(ConfigurationError, match="enable_monitoring=False"):
        async with app.serving():
            pass


@pytest.mark.parametrize(("port", "name"), [(18000, "api_port"), (13000, "mcp_port")])
async def test_a_metrics_port_that_is_the_apps_own_is_refused_at_start(
    tmp_path: Path, port: int, name: str
) -> None:
    app = _app(tmp_path)
    app.monitoring.backend = PrometheusMonitoring(metrics_port=port)
    with pytest.raises(ConfigurationError, match=f"metrics_port {port} is the app's {name}"):
        async with app.serving():
            pass


def test_a_metrics_port_equal_to_a_port_given_to_start_is_refused(tmp_path: Path) -> None:
    app = _app(tmp_path)
    app.monitoring.backend = PrometheusMonitoring(metrics_port=19090)
    with pytest.raises(ConfigurationError, match="is the app's api_port"):
        app.start(api_port=19090)


async def test_a_backend_of_another_kind_is_refused_at_start(tmp_path: Path) -> None:
    app = _app(tmp_path)
    app.monitoring.backend = {"metrics_port": 9090}
    with pytest.raises(ConfigurationError, match=r"app\.monitoring\.backend must be a PrometheusMonitoring"):
        async with app.serving():
            pass
