"""One node of a cluster for the failover test: `nexus serve tests.support.cluster_node:app` with
NEXUS_STATE_URL (PostgreSQL) and NEXUS_REDIS_URL set; clustering on, health checks every 0.5 s.
"""

from __future__ import annotations

from nexus import Nexus, create_production_nexus
from nexus.workflow.builder import WorkflowBuilder

HEALTH_CHECK_INTERVAL_S = 0.5


def build(**options: object) -> Nexus:
    app = create_production_nexus(api_port=0, mcp_port=0, **options)
    app.api.enable_clustering = True
    app.api.health_check_interval = HEALTH_CHECK_INTERVAL_S
    app.auth.password_time_cost = 1
    app.auth.password_memory_kib = 1024
    add = WorkflowBuilder().add_input("a", int).add_input("b", int)
    app.register("add", add.add_node("PythonCodeNode", "add", {"code": "result = a + b"}).build())
    return app


app = build()
