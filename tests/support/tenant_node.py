"""One node of a multi-tenant cluster, for tests that run two: state and Redis from the environment.

`nexus serve tests.support.tenant_node:app` in a subprocess is the second node; the test process
builds the first with `build()`.
"""

from __future__ import annotations

import asyncio

from nexus import Nexus, create_production_nexus
from nexus.enterprise.tenancy import TenantManager
from nexus.workflow.builder import WorkflowBuilder

BASE_DOMAIN = "api.test"
# A small profile so each quota is reached in a handful of calls.
TINY = {
    "api_requests_per_hour": 6,
    "concurrent_workflows": 1,
    "cli_sessions": 1,
    "mcp_tools": 3,
    "storage_mb": 10,
}


async def nap(seconds: float) -> float:
    """Hold a run open without holding the event loop."""
    await asyncio.sleep(seconds)
    return seconds


def build() -> Nexus:
    manager = TenantManager(isolation_level="moderate", quota_profiles={"tiny": TINY})
    app = create_production_nexus(
        tenant_manager=manager,
        tenant_routing={"api": "subdomain", "cli": "prefix", "mcp": "path"},
        base_domain=BASE_DOMAIN,
        api_port=0,
        mcp_port=0,
    )
    app.tenancy.refresh_seconds = 0.5
    app.auth.password_time_cost = 1
    app.auth.password_memory_kib = 1024
    echo = WorkflowBuilder()
    echo.add_input("text", str, required=False, default="")
    echo.add_node("PythonCodeNode", "echo", {"code": "result = text"})
    app.register_workflow("echo", echo.build(), tenant_scoped=True)
    slow = WorkflowBuilder()
    slow.add_input("seconds", float, required=False, default=2.0)
    slow.add_node("PythonCodeNode", "nap", {"function": nap})
    app.register_workflow("slow", slow.build(), tenant_scoped=True)
    return app


app = build()
