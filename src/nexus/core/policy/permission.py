"""Permission strings `channel:action:resource`, parsed once when a role is defined.

Each segment is a name or `*`. The resource is everything after the second colon, so a workflow
tag that itself holds a colon can still be named. Imports only the standard library and errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nexus.errors import ConfigurationError

WILDCARD = "*"
CHANNELS = ("api", "cli", "mcp")
# What each channel calls its workflows in general, as a permission's resource segment.
CHANNEL_WORDS = {"api": "workflows", "cli": "commands", "mcp": "tools"}
RESOURCES_SURFACE = "resources"  # MCP resources: each workflow's description, read-only
HEALTH_SURFACE = "health"
AUTHZ_SURFACE = "authz"  # the explain endpoint
METRICS_SURFACE = "metrics"  # /metrics when auth is on
TENANTS_SURFACE = "tenants"  # tenant administration: read, create, suspend, resume, delete

ACTION = re.compile(r"[a-z][a-z0-9_]{0,31}")
_RESOURCE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")
MAX_LENGTH = 200


class InvalidPermissionError(ConfigurationError):
    """A permission string that cannot be parsed; `position` is the 1-based character at fault."""

    code = "invalid_permission"
    title = "Invalid permission"

    def __init__(self, text: str, position: int, problem: str) -> None:
        super().__init__(f"Invalid permission {text[:MAX_LENGTH]!r} at position {position}: {problem}.")
        self.position = position


@dataclass(frozen=True, slots=True)
class Permission:
    """One parsed permission; `text` is how it was written (it is quoted in every reason)."""

    channel: str
    action: str
    resource: str
    text: str

    def __str__(self) -> str:
        return self.text


def parse_permission(text: object) -> Permission:
    """Parse `channel:action:resource`.

    Raises:
        InvalidPermissionError: the string is malformed; the message gives the position of the fault.
    """
    if not isinstance(text, str):
        raise InvalidPermissionError(repr(text), 1, f"a permission is a string, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise InvalidPermissionError(text, MAX_LENGTH + 1, f"longer than {MAX_LENGTH} characters")
    channel, sep1, rest = text.partition(":")
    action, sep2, resource = rest.partition(":")
    if not sep1 or not sep2:
        raise InvalidPermissionError(text, len(text) + 1, "expected three segments, channel:action:resource")
    action_at = len(channel) + 2
    resource_at = action_at + len(action) + 1
    if channel != WILDCARD and channel not in CHANNELS:
        raise InvalidPermissionError(
            text, 1, f"the channel is one of {', '.join(CHANNELS)} or *, not {channel!r}"
        )
    _check(text, action, action_at, ACTION, "an action is lowercase letters, digits and '_', or *")
    _check(
        text, resource, resource_at, _RESOURCE, "a resource is a name or tag (letters, digits, '_.:-'), or *"
    )
    return Permission(channel=channel, action=action, resource=resource, text=text)


def _check(text: str, segment: str, at: int, pattern: re.Pattern[str], rule: str) -> None:
    if segment == WILDCARD:
        return
    if not segment:
        raise InvalidPermissionError(text, at, "the segment is empty")
    if pattern.fullmatch(segment) is None:
        offset = next((i for i in range(len(segment)) if pattern.fullmatch(segment[: i + 1]) is None), 0)
        raise InvalidPermissionError(text, at + offset, rule)
