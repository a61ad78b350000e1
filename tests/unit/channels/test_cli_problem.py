"""Exit codes and messages the `nexus` command derives from problem documents and local errors."""

from __future__ import annotations

import pytest

from nexus import errors
from nexus.channels.cli.problem import exit_code_for, failure_from_error, failure_from_problem, unreachable

ERROR_CLASSES = [
    value
    for value in vars(errors).values()
    if isinstance(value, type) and issubclass(value, errors.NexusError)
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_code_maps_to_that_class_exit_code(cls: type[errors.NexusError]) -> None:
    # The status given is deliberately wrong: the code decides when it is known.
    assert exit_code_for(cls.code, 418) == cls.exit_code


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, 77), (403, 77), (404, 2), (413, 2), (422, 2), (429, 75), (500, 70), (503, 69), (504, 69)],
)
def test_unknown_codes_fall_back_on_the_most_general_class_with_that_status(
    status: int, expected: int
) -> None:
    assert exit_code_for("some_future_code", status) == expected
    assert exit_code_for(None, status) == expected


def test_a_status_no_error_class_uses_is_an_unexpected_failure() -> None:
    assert exit_code_for(None, 418) == errors.InternalError.exit_code


def test_the_design_table_of_exit_codes_holds() -> None:
    table = {
        "invalid_input": 2,
        "workflow_not_found": 2,
        "not_authenticated": 77,
        "forbidden": 77,
        "rate_limited": 75,
        "quota_exceeded": 75,
        "dependency_unavailable": 69,
        "timeout": 69,
        "workflow_failed": 1,
        "internal_error": 70,
    }
    assert {code: exit_code_for(code, 0) for code in table} == table


def test_a_problem_document_becomes_title_detail_and_facts() -> None:
    problem = errors.WorkflowFailedError("node 'explode' failed: boom", node_id="explode").to_problem()
    problem["request_id"] = "abc123abc"
    failure = failure_from_problem(problem, 422)
    assert (failure.title, failure.detail, failure.exit_code) == ("Workflow failed", problem["detail"], 1)
    assert failure.facts == (("node", "explode"), ("request id", "abc123abc"))


def test_retry_after_is_kept_from_a_rate_limit_problem() -> None:
    problem = errors.RateLimitedError("Slow down.", retry_after=12).to_problem()
    failure = failure_from_problem(problem, 429)
    assert failure.exit_code == 75
    assert ("retry after (s)", "12") in failure.facts


def test_a_problem_without_title_or_detail_still_reads() -> None:
    failure = failure_from_problem({"title": 5, "detail": ""}, 503)
    assert (failure.title, failure.detail, failure.exit_code) == ("HTTP 503", None, 69)
    assert str(failure) == "HTTP 503"


def test_a_local_error_keeps_its_class_exit_code_and_node() -> None:
    failure = failure_from_error(errors.WorkflowFailedError("bad", node_id="n1"))
    assert (failure.title, failure.detail, failure.exit_code, failure.facts) == (
        "Workflow failed",
        "bad",
        1,
        (("node", "n1"),),
    )


def test_an_unreachable_server_names_the_url_and_exits_unavailable() -> None:
    failure = unreachable("http://127.0.0.1:9", "connection refused.")
    assert "http://127.0.0.1:9" in failure.title
    assert failure.exit_code == errors.DependencyUnavailableError.exit_code == 69
