"""Helpers for testing Nexus apps: one client per channel, all answering with the same `Reply`.

Serve the app under test with `app.start_in_thread()` or `async with app.serving()` on port 0.
`SoftAuthenticator` stands in for a hardware key (WebAuthn) in tests of second factors;
`nexus.testing.authz.ask` puts a question to roles and policies without serving the app.
"""

from nexus.testing.clients import CliClient, HttpClient, McpClient, Reply, client_for
from nexus.testing.clock import FakeClock
from nexus.testing.webauthn import SoftAuthenticator

__all__ = ["CliClient", "FakeClock", "HttpClient", "McpClient", "Reply", "SoftAuthenticator", "client_for"]
