"""Helpers for testing Nexus apps: one client per channel, all answering with the same `Reply`.

Serve the app under test with `app.start_in_thread()` or `async with app.serving()` on port 0.
"""

from nexus.testing.clients import CliClient, HttpClient, McpClient, Reply, client_for
from nexus.testing.clock import FakeClock

__all__ = ["CliClient", "FakeClock", "HttpClient", "McpClient", "Reply", "client_for"]
