"""The call observer a monitoring backend asks for: spans (OpenTelemetry), call log lines, or both,
built by `open_call_observer`. With `pseudonymize`, principal ids and client addresses are keyed
pseudonyms in both, so operational telemetry carries no personal data.

The tracing and logging libraries are imported only when asked for. Imports no channel code.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Any, Protocol

from nexus.core.ports import CallObserver
from nexus.core.telemetry import NoopCallObserver
from nexus.core.types import CallRecord

if TYPE_CHECKING:
    from nexus.backends.call_log import JsonCallLog
    from nexus.backends.otel import OtelSpanRecorder

PSEUDONYM_PREFIX = "p:"


class ObservationPlan(Protocol):
    """What a monitoring backend asks for (`nexus.enterprise.monitoring.PrometheusMonitoring`)."""

    @property
    def enable_traces(self) -> bool: ...

    @property
    def enable_logs(self) -> bool: ...

    @property
    def traces_endpoint(self) -> str | None: ...

    @property
    def service_name(self) -> str: ...

    @property
    def log_stream(self) -> Any: ...


class Pseudonym:
    """`p:` and the first 16 hex digits of HMAC-SHA256 under a random key of this app's own: the
    same value always gets the same pseudonym here (calls stay correlatable), and nobody without
    the key can tell whose it is."""

    __slots__ = ("_cached", "_key")

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        # A call's span and its log line name the same principal and address, and callers come
        # back: each value is hashed once while it stays among the recent ones (bounded memory).
        self._cached = functools.lru_cache(maxsize=4096)(self._pseudonym)

    def __call__(self, value: str) -> str:
        return self._cached(value)

    def _pseudonym(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
        return f"{PSEUDONYM_PREFIX}{digest[:16]}"


def _as_is(value: str) -> str:
    return value


class TelemetryObserver:
    """Spans and call log lines for every call; a line names its call's span when both are on."""

    def __init__(self, spans: OtelSpanRecorder | None, log: JsonCallLog | None) -> None:
        self._spans = spans
        self._log = log

    def observe(self, call: CallRecord) -> None:
        ids = self._spans.record(call) if self._spans is not None else None
        if self._log is not None:
            if ids is None:
                self._log.write(call)
            else:
                self._log.write(call, *ids)

    async def close(self) -> None:
        try:
            if self._spans is not None:
                await self._spans.close()
        finally:
            if self._log is not None:
                await self._log.close()


def open_call_observer(plan: ObservationPlan | None, *, pseudonymize: bool = False) -> CallObserver:
    """The observer `plan` asks for (a no-op one when it asks for neither traces nor logs).

    `pseudonymize=True` replaces principal ids and client addresses in spans and log lines by
    keyed pseudonyms (see `Pseudonym`; the key is new for each observer). Close it on stop.
    """
    if plan is None or not (plan.enable_traces or plan.enable_logs):
        return NoopCallObserver()
    conceal = Pseudonym() if pseudonymize else _as_is
    spans = None
    if plan.enable_traces:
        from nexus.backends.otel import OtelSpanRecorder

        spans = OtelSpanRecorder(
            endpoint=plan.traces_endpoint, service_name=plan.service_name, conceal=conceal
        )
    log = None
    if plan.enable_logs:
        from nexus.backends.call_log import JsonCallLog

        log = JsonCallLog(stream=plan.log_stream, conceal=conceal)
    return TelemetryObserver(spans, log)
