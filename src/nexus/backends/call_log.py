"""The call log: one JSON line per pipeline call (structlog, rendered with orjson).

Lines are rendered on the event loop and written by a `QueueListener` thread, so no write blocks
a call. Only ids, names, outcomes and timings are logged: never inputs, outputs or credentials.
Imports no channel code.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
from collections.abc import Callable, MutableMapping
from logging.handlers import QueueHandler, QueueListener
from typing import Any, TextIO

import orjson
import structlog

from nexus.core.telemetry import shown_principal
from nexus.core.types import Action, CallRecord, Outcome

EVENT = "call"


def _render(event: Any, **options: Any) -> str:
    return orjson.dumps(event, default=options.get("default")).decode()


def _leading(logger: Any, name: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """When, how bad and what first: a line reads the same way whatever fields follow."""
    first = {key: event.pop(key) for key in ("timestamp", "level", "event")}
    return {**first, **event}


def _level(outcome: Outcome) -> int:
    if outcome is Outcome.SUCCESS:
        return logging.INFO
    return logging.ERROR if outcome is Outcome.ERROR else logging.WARNING


class JsonCallLog:
    """Writes one line per call to `stream` (standard error when None); `conceal` is applied to
    the principal id and client address."""

    def __init__(self, *, stream: TextIO | None, conceal: Callable[[str], str]) -> None:
        lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        writer = logging.StreamHandler(stream if stream is not None else sys.stderr)
        writer.setFormatter(logging.Formatter("%(message)s"))
        self._listener = QueueListener(lines, writer)
        # A logger of this app's own, outside the logging tree: nothing else writes to it, and it
        # propagates to no handler the application configured.
        logger = logging.Logger("nexus.calls", logging.INFO)
        logger.propagate = False
        logger.addHandler(QueueHandler(lines))
        self._log = structlog.wrap_logger(
            logger,
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
                _leading,
                structlog.processors.JSONRenderer(serializer=_render),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            context_class=dict,
            cache_logger_on_first_use=True,
        )
        self._conceal = conceal
        self._listener.start()

    def write(self, call: CallRecord, trace_id: str | None = None, span_id: str | None = None) -> None:
        """Log `call`, with the ids of its span when it was traced."""
        inv = call.invocation
        principal = shown_principal(call, self._conceal)
        fields: dict[str, Any] = {
            "channel": inv.channel.value,
            "workflow": call.workflow,
            "action": inv.action.value if isinstance(inv.action, Action) else inv.action,
            "outcome": call.outcome.value,
            "error_code": call.error_code,
            "duration_ms": round(call.duration_s * 1000, 3),
            "request_id": inv.request_id,
            "tenant": inv.tenant_id,
            "principal": principal,
            "client": self._conceal(inv.client_addr) if inv.client_addr else None,
        }
        if call.run is not None:
            fields["run_id"] = call.run.run_id
        if trace_id is not None:
            fields["trace_id"], fields["span_id"] = trace_id, span_id
        self._log.log(_level(call.outcome), EVENT, **fields)

    async def close(self) -> None:
        """Write every queued line, then stop (joining the writer thread, off the event loop)."""
        await asyncio.to_thread(self._listener.stop)
