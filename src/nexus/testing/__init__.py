"""Helpers for testing Nexus apps: one client per channel, all answering with the same `Reply`.

`serve(app)` runs an app on ephemeral loopback ports for the duration of a test.
"""

from nexus.testing.clients import CliClient, HttpClient, McpClient, Reply, client_for

__all__ = ["CliClient", "HttpClient", "McpClient", "Reply", "client_for"]
