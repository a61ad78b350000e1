"""The `Meter` as Prometheus metrics, on a registry of its own, rendered as text for `/metrics`.

The metric names live here and nowhere else. Imports no channel code.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from nexus.core.types import Channel, Outcome

CHANNEL_REQUESTS = "nexus_channel_requests_total"
CHANNEL_REQUEST_DURATION = "nexus_channel_request_duration_seconds"
WORKFLOW_DURATION = "nexus_workflow_duration_seconds"
TENANT_RESOURCE_USAGE = "nexus_tenant_resource_usage"

# The pipeline itself should cost well under a millisecond, so the call buckets start there.
_CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WORKFLOW_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)

# `generate_latest` writes the classic text format; this is the content type it pairs with.
_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class PrometheusMeter:
    """Counts calls per channel, workflow and outcome, and times calls and workflow runs.

    Label values must come from a bounded set: the pipeline passes registered workflow names
    (or one placeholder for unknown ones), never raw caller input.
    """

    def __init__(self) -> None:
        # A registry per meter, so several apps (or tests) in one process never clash.
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._requests = Counter(
            CHANNEL_REQUESTS,
            "Calls that reached the pipeline, by channel, workflow and outcome.",
            ("channel", "workflow", "outcome"),
            registry=self.registry,
        )
        self._call_duration = Histogram(
            CHANNEL_REQUEST_DURATION,
            "Time from a channel handing a call to the pipeline until the pipeline answered.",
            ("channel",),
            buckets=_CALL_BUCKETS,
            registry=self.registry,
        )
        self._workflow_duration = Histogram(
            WORKFLOW_DURATION,
            "Time spent executing a workflow, without the pipeline around it.",
            ("workflow",),
            buckets=_WORKFLOW_BUCKETS,
            registry=self.registry,
        )
        self._tenant_usage = Gauge(
            TENANT_RESOURCE_USAGE,
            "What each tenant uses now of each quota's resource (requests this hour, runs, sessions, ...).",
            ("tenant", "resource"),
            registry=self.registry,
        )
        self._tenant_resources: dict[str, set[str]] = {}
        # `.labels()` hashes and locks on every call; the hot path looks its children up here instead.
        self._request_children: dict[tuple[Channel, str, Outcome], Counter] = {}
        self._call_children: dict[Channel, Histogram] = {}
        self._workflow_children: dict[str, Histogram] = {}

    def observe_call(self, channel: Channel, workflow: str, outcome: Outcome, duration_s: float) -> None:
        """Count one call and time it."""
        key = (channel, workflow, outcome)
        requests = self._request_children.get(key)
        if requests is None:
            requests = self._request_children[key] = self._requests.labels(
                channel.value, workflow, outcome.value
            )
        requests.inc()
        duration = self._call_children.get(channel)
        if duration is None:
            duration = self._call_children[channel] = self._call_duration.labels(channel.value)
        duration.observe(duration_s)

    def observe_workflow(self, workflow: str, duration_s: float) -> None:
        """Time one workflow execution."""
        duration = self._workflow_children.get(workflow)
        if duration is None:
            duration = self._workflow_children[workflow] = self._workflow_duration.labels(workflow)
        duration.observe(duration_s)

    def observe_tenant_usage(self, tenant_id: str, resource: str, value: float) -> None:
        """Set a tenant's current use of `resource` (tenant ids are registered ids, a bounded set)."""
        self._tenant_usage.labels(tenant_id, resource).set(value)
        self._tenant_resources.setdefault(tenant_id, set()).add(resource)

    def forget_tenant(self, tenant_id: str) -> None:
        for resource in self._tenant_resources.pop(tenant_id, set()):
            self._tenant_usage.remove(tenant_id, resource)

    def render(self) -> tuple[bytes, str]:
        """Return the exposition text of every metric and its content type."""
        return generate_latest(self.registry), _CONTENT_TYPE
