"""Readiness: whether every backend a node needs answers, probed in the background.

`/ready`, the health detail and cluster heartbeats read the last probe, so a load balancer polling
costs no backend round trip; a result older than the interval is probed again on demand.
Imports only core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from nexus.core.ports import Clock

log = logging.getLogger("nexus.health")

Probe = Callable[[], Awaitable[None]]
"""Checks one backend: returns when it answers, raises when it does not."""

PROBE_TIMEOUT_S = 5.0
"""Longest wait for one backend to answer a probe; a slower one counts as not answering."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe of every backend: when it finished (monotonic seconds) and which did not answer."""

    at: float
    failed: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return not self.failed


class Readiness:
    """The node's readiness, as of its last probe.

    At most one probe runs at a time; callers arriving meanwhile share it. A probe is cancelled
    only by `close()`, never by a caller that stops waiting.
    """

    def __init__(
        self,
        probes: Mapping[str, Probe],
        clock: Clock,
        *,
        interval_s: float,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._probes = dict(probes)
        self._clock = clock
        self.interval_s = interval_s
        self._timeout_s = timeout_s
        self._last: ProbeResult | None = None
        self._running: asyncio.Task[ProbeResult] | None = None

    @property
    def last(self) -> ProbeResult | None:
        """The last finished probe (None before the first)."""
        return self._last

    async def is_ready(self) -> bool:
        """Whether every backend answered the last probe, probing again when it is older than the interval."""
        last = self._last
        if last is None or self._clock.monotonic() - last.at > self.interval_s:
            last = await self.probe()
        return last.ready

    async def probe(self) -> ProbeResult:
        """Probe every backend now (or join the probe under way) and keep the result."""
        running = self._running
        if running is None or running.done():
            running = self._running = asyncio.create_task(self._probe_all())
        return await asyncio.shield(running)

    async def keep_fresh(self) -> None:
        """Probe whenever the last result reaches the interval's age; runs until cancelled."""
        while True:
            last = self._last
            wait = self.interval_s if last is None else last.at + self.interval_s - self._clock.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                await self.probe()

    async def close(self) -> None:
        """Cancel a probe under way (the node is stopping)."""
        running = self._running
        if running is not None and not running.done():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    async def _probe_all(self) -> ProbeResult:
        names = list(self._probes)
        answers = await asyncio.gather(*(self._probe_one(name) for name in names))
        failed = tuple(name for name, answered in zip(names, answers, strict=True) if not answered)
        result = ProbeResult(self._clock.monotonic(), failed)
        previous = self._last
        if previous is None or previous.failed != failed:
            if failed:
                log.warning("Not ready: %s did not answer.", ", ".join(failed))
            elif previous is not None:
                log.info("Ready again: every backend answers.")
        self._last = result
        return result

    async def _probe_one(self, name: str) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._probes[name]()
        except Exception:  # noqa: BLE001  # however a backend fails to answer, the node is not ready
            return False
        return True
