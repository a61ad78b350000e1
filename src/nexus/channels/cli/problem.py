"""What the `nexus` command makes of a failed call: the message to print and the exit code.

Exit codes come from the classes of `nexus.errors` (matched by problem `code`, then by HTTP status),
never from a second table. Imports only the standard library and `nexus.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nexus.errors import DependencyUnavailableError, InternalError, NexusError

# Extra problem members worth showing, in this order, with their labels.
_FACTS = (("node_id", "node"), ("retry_after", "retry after (s)"), ("request_id", "request id"))


class Failure(Exception):
    """A command that did not succeed: what to tell the user and how to exit."""

    def __init__(
        self,
        title: str,
        detail: str | None,
        exit_code: int,
        facts: tuple[tuple[str, str], ...] = (),
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.title = title
        self.detail = detail
        self.exit_code = exit_code
        self.facts = facts
        self.problem = problem

    def document(self) -> dict[str, Any]:
        """The failure as a problem document, for `--json` output on stderr."""
        if self.problem is not None:
            return dict(self.problem)
        return {"title": self.title, "detail": self.detail, "code": _code_for_exit(self.exit_code)}


def _error_classes() -> list[type[NexusError]]:
    """Every loaded error class, parents before children, so a status maps to its most general class."""
    found: list[type[NexusError]] = []
    queue: list[type[NexusError]] = [NexusError]
    while queue:
        cls = queue.pop(0)
        found.append(cls)
        queue.extend(cls.__subclasses__())
    return found


def _code_for_exit(exit_code: int) -> str:
    """The code of the most general error class with `exit_code` (for failures found locally)."""
    for cls in _error_classes():
        if cls.exit_code == exit_code:
            return cls.code
    return "usage_error"


def exit_code_for(code: object, status: int) -> int:
    """The exit code of the error class named by `code`, else of the most general class with `status`."""
    classes = _error_classes()
    for cls in classes:
        if cls.code == code:
            return cls.exit_code
    for cls in classes:
        if cls.http_status == status:
            return cls.exit_code
    return InternalError.exit_code


def failure_from_problem(problem: Mapping[str, Any], status: int) -> Failure:
    """Read an RFC 9457 problem document (or whatever JSON object came back) into a `Failure`."""
    title = problem.get("title")
    detail = problem.get("detail")
    facts = tuple((label, str(problem[key])) for key, label in _FACTS if problem.get(key) is not None)
    return Failure(
        title=title if isinstance(title, str) and title else f"HTTP {status}",
        detail=detail if isinstance(detail, str) and detail else None,
        exit_code=exit_code_for(problem.get("code"), status),
        facts=facts,
        problem=problem,
    )


def failure_from_error(error: NexusError) -> Failure:
    """A `NexusError` raised in this process (admin commands, serving) as a `Failure`."""
    facts = tuple(
        (label, str(error.detail[key])) for key, label in _FACTS if error.detail.get(key) is not None
    )
    return Failure(error.title, error.message, error.exit_code, facts, error.to_problem())


def unreachable(url: str, reason: str) -> Failure:
    """The server could not be reached or did not answer in time."""
    return Failure(
        title=f"Cannot reach the Nexus server at {url}",
        detail=reason,
        exit_code=DependencyUnavailableError.exit_code,
    )
