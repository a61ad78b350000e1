"""What the `nexus` command prints: readable tables, JSON for scripts, failures on stderr."""

from __future__ import annotations

import io
import json

from rich.console import Console

from nexus.channels.cli.problem import Failure
from nexus.channels.cli.render import (
    print_json,
    render_failure,
    render_keys,
    render_result,
    render_workflow,
    render_workflows,
    safe,
)


def console() -> Console:
    return Console(file=io.StringIO(), width=100, color_system=None)


def text_of(target: Console) -> str:
    out = target.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


RESULT = {
    "run_id": "run-1",
    "workflow": "report",
    "outputs": {"load": {"rows": 3, "ok": True}, "shape": {"result": {"total": 7, "items": [1, 2]}}},
    "duration_ms": 4.2,
}


def test_a_result_shows_the_run_and_every_output_per_node() -> None:
    target = console()
    render_result(target, RESULT)
    shown = text_of(target)
    for fragment in ("report", "run-1", "4.2 ms", "load", "rows", "3", "true", "shape", '"total": 7'):
        assert fragment in shown


def test_a_result_without_outputs_says_so() -> None:
    target = console()
    render_result(target, {"workflow": "w", "run_id": "r", "outputs": {}, "duration_ms": 1})
    assert "(no outputs)" in text_of(target)


def test_output_values_cannot_inject_terminal_escapes_or_markup() -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J[bold red]shout[/bold red]\u202eevil"
    target = Console(file=io.StringIO(), width=200, force_terminal=True)
    render_result(
        target, {"workflow": "w", "run_id": "r", "outputs": {"n": {"v": hostile}}, "duration_ms": 1}
    )
    shown = text_of(target)
    assert "\x1b]0;" not in shown
    assert "\x1b[2J" not in shown
    assert "\u202e" not in shown
    assert "[bold red]shout[/bold red]" in shown
    assert "\\x1b]0;pwned" in shown


def test_safe_text_keeps_tabs_newlines_and_ordinary_unicode() -> None:
    assert safe("a\tb\nçé ✓").plain == "a\tb\nçé ✓"
    assert safe("bell\x07").plain == "bell\\x07"


def test_the_workflow_listing_is_a_table_of_names_descriptions_and_tags() -> None:
    target = console()
    render_workflows(target, [{"name": "add", "description": "Add two integers", "tags": ["math", "demo"]}])
    shown = text_of(target)
    assert "add" in shown
    assert "Add two integers" in shown
    assert "math, demo" in shown


def test_an_empty_listing_says_nothing_is_visible() -> None:
    target = console()
    render_workflows(target, [])
    assert "No workflows visible" in text_of(target)


def test_a_described_workflow_lists_its_parameters() -> None:
    info = {
        "name": "add",
        "description": "Add",
        "input_schema": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "First"},
                "b": {"type": ["integer", "null"], "default": 0},
            },
            "required": ["a"],
        },
    }
    target = console()
    render_workflow(target, info)
    lines = text_of(target).splitlines()
    row_a = next(line for line in lines if "First" in line)
    row_b = next(line for line in lines if "integer | null" in line)
    assert "yes" in row_a
    assert "no" in row_b
    assert " 0 " in row_b


def test_a_free_form_workflow_says_any_parameters_go() -> None:
    target = console()
    render_workflow(target, {"name": "any", "input_schema": {"type": "object"}})
    assert "free-form" in text_of(target)


def test_a_failure_shows_title_detail_and_facts() -> None:
    target = console()
    render_failure(target, Failure("Workflow failed", "node 'x' failed: boom", 1, (("node", "x"),)))
    shown = text_of(target)
    assert "Error: Workflow failed: node 'x' failed: boom" in shown
    assert "node: x" in shown


def test_json_output_is_the_document_itself() -> None:
    out = io.StringIO()
    print_json(out, RESULT)
    assert json.loads(out.getvalue()) == RESULT


def test_keys_show_ids_names_roles_and_revocation_but_no_secret() -> None:
    target = console()
    row = {
        "key_id": "k1",
        "name": "ci",
        "roles": ["admin", "ops"],
        "created_at": "2025-01-01T10:11:12.5+00:00",
        "revoked_at": None,
    }
    render_keys(target, [row])
    shown = text_of(target)
    for fragment in ("k1", "ci", "admin, ops", "2025-01-01 10:11:12"):
        assert fragment in shown
