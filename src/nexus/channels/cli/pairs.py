"""`key=value` options (`-p`, `--attr`, `--attribute`): one reading for every command that takes them.

Imports only the CLI's problem module, so light commands stay light.
"""

from __future__ import annotations

from nexus.channels.cli.problem import Failure
from nexus.errors import InvalidInputError

USAGE = InvalidInputError.exit_code


def parse_pairs(pairs: list[str], *, what: str, option: str) -> dict[str, str]:
    """The pairs as a dict of raw strings; a pair without `=` or a key given twice is a usage error."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Failure(f"Invalid {what}", f"{pair!r}: expected {option} key=value.", USAGE)
        if key in found:
            raise Failure(f"Invalid {what}", f"{key!r} is given more than once.", USAGE)
        found[key] = value
    return found
