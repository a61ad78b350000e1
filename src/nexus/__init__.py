"""Nexus: register a workflow once, serve it as a REST endpoint, a CLI command and an MCP tool.

Public names load on first use, so `import nexus` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Nexus", "RunningNexus", "__version__", "create_production_nexus"]

if TYPE_CHECKING:
    from nexus.app import Nexus, RunningNexus, create_production_nexus


def __getattr__(name: str) -> Any:
    if name in ("Nexus", "RunningNexus", "create_production_nexus"):
        from nexus import app

        return getattr(app, name)
    raise AttributeError(f"module 'nexus' has no attribute {name!r}")
