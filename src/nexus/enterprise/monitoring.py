"""The source document's monitoring surface: `PrometheusMonitoring`, set as `app.monitoring.backend`.

It only describes what is wanted and checks it at once; the metrics port is served by the app,
traces and call logs by the observers of `nexus.backends.call_observer`. Imports no telemetry library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nexus.errors import ConfigurationError
from nexus.settings import MonitoringSettings, Options

__all__ = ["PrometheusMonitoring", "monitoring_in_use"]


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535


@dataclass(frozen=True, eq=False, init=False)
class PrometheusMonitoring:
    """Prometheus metrics, and optionally OpenTelemetry traces and JSON call logs, for every call.

    - `metrics_port` (alias `port`): also serve the metrics at `http://<host>:<metrics_port>/metrics`
      (the app's host; `app.monitoring.metrics_path` is the path), authorized as on the API port.
      None: on the API port only. 0 asks the OS for a free port.
    - `enable_traces`: one span per call, on every channel, exported over OTLP/HTTP to
      `traces_endpoint`; without it, to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
      `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`, else `http://localhost:4318/v1/traces`. An
      endpoint given with no path gets `/v1/traces`. `service_name` is the spans' `service.name`.
    - `enable_logs`: one JSON line per call on `log_stream` (a text stream; standard error when None).
    """

    metrics_port: int | None
    enable_traces: bool
    enable_logs: bool
    traces_endpoint: str | None
    service_name: str
    log_stream: Any

    def __init__(
        self,
        metrics_port: int | None = None,
        enable_traces: bool = False,
        enable_logs: bool = False,
        *,
        port: int | None = None,
        traces_endpoint: str | None = None,
        service_name: str = "nexus",
        log_stream: Any = None,
    ) -> None:
        if port is not None and metrics_port is not None and port != metrics_port:
            raise ConfigurationError(
                f"PrometheusMonitoring got port={port!r} and metrics_port={metrics_port!r}: they are "
                "the same setting; give one."
            )
        chosen = metrics_port if metrics_port is not None else port
        for name, value in (
            ("metrics_port", chosen),
            ("enable_traces", enable_traces),
            ("enable_logs", enable_logs),
            ("traces_endpoint", traces_endpoint),
            ("service_name", service_name),
            ("log_stream", log_stream),
        ):
            object.__setattr__(self, name, value)
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigurationError` naming the first argument that cannot be honoured."""
        port = self.metrics_port
        if port is not None and not _is_port(port):
            raise ConfigurationError(
                "PrometheusMonitoring.metrics_port must be a port number from 0 to 65535 or None, "
                f"got {port!r}."
            )
        for name in ("enable_traces", "enable_logs"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(
                    f"PrometheusMonitoring.{name} must be True or False, got {getattr(self, name)!r}."
                )
        self._check_traces()
        stream = self.log_stream
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise ConfigurationError("PrometheusMonitoring.log_stream must be a text stream (with write()).")
        if stream is not None and not self.enable_logs:
            raise ConfigurationError(
                "PrometheusMonitoring.log_stream is set but enable_logs=False, so nothing would be "
                "written to it: pass enable_logs=True, or leave it out."
            )

    def _check_traces(self) -> None:
        endpoint = self.traces_endpoint
        if endpoint is not None:
            parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    "PrometheusMonitoring.traces_endpoint must be an http:// or https:// URL "
                    "(an OTLP/HTTP collector, e.g. http://127.0.0.1:4318)."  # the value may hold a token
                )
        name = self.service_name
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(
                f"PrometheusMonitoring.service_name must be a non-empty string, got {name!r}."
            )
        if not self.enable_traces:
            changed = (
                "traces_endpoint" if endpoint is not None else "service_name" if name != "nexus" else None
            )
            if changed is not None:
                raise ConfigurationError(
                    f"PrometheusMonitoring.{changed} is for traces, but enable_traces=False: pass "
                    "enable_traces=True, or leave it out."
                )


def monitoring_in_use(options: Options, monitoring: MonitoringSettings) -> PrometheusMonitoring | None:
    """The monitoring backend an app serves with (`app.monitoring.backend`), checked against
    the app's options; None when none is set.

    Raises:
        ConfigurationError: it is not a `PrometheusMonitoring`, monitoring is off (it would do
            nothing), or its metrics port is the app's API or MCP port.
    """
    backend = monitoring.backend
    if backend is None:
        return None
    if not isinstance(backend, PrometheusMonitoring):
        raise ConfigurationError(
            f"app.monitoring.backend must be a PrometheusMonitoring, not {type(backend).__name__}."
        )
    backend.validate()
    if not options.enable_monitoring:
        raise ConfigurationError(
            "app.monitoring.backend is set but enable_monitoring=False, so it would do nothing: pass "
            "enable_monitoring=True to Nexus(...), or leave the backend unset."
        )
    port = backend.metrics_port
    if port:  # 0 asks the OS for a free port, which is never one already bound
        for name in ("api_port", "mcp_port"):
            if port == getattr(options, name):
                raise ConfigurationError(
                    f"PrometheusMonitoring.metrics_port {port} is the app's {name}: give the metrics "
                    "a port of their own, or leave metrics_port out to serve them on the API port."
                )
    return backend
