"""How the `nexus` command shows things: rich tables for people, JSON for scripts, failures on stderr.

Everything that came from a server is shown as plain text with control characters made visible, so
a workflow's output can neither inject rich markup nor terminal escape sequences. Imports rich only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from nexus.channels.cli.problem import Failure

# C0 (but tab and newline), DEL and C1 controls, and the bidirectional overrides ("trojan source").
_CONTROL = [
    *range(0x09),
    *range(0x0B, 0x20),
    *range(0x7F, 0xA0),
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_VISIBLE = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _CONTROL}


def safe(text: str) -> Text:
    """Untrusted text as a rich `Text`: no markup, no control characters."""
    return Text(text.translate(_VISIBLE))


def _value(value: Any) -> Text:
    if isinstance(value, str):
        return safe(value)
    if isinstance(value, dict | list):
        return safe(json.dumps(value, indent=2, ensure_ascii=False, default=str))
    return safe(json.dumps(value, default=str))


def print_json(out: TextIO, document: Any) -> None:
    """Write `document` as indented JSON for scripts (`--json`)."""
    out.write(json.dumps(document, indent=2, ensure_ascii=False, default=str))
    out.write("\n")
    out.flush()


def render_result(console: Console, document: Mapping[str, Any]) -> None:
    """A run's outputs, one table per node."""
    header = Text.assemble(
        ("Workflow ", "bold"),
        safe(str(document.get("workflow", "?"))),
        "  run ",
        safe(str(document.get("run_id", "?"))),
        f"  {document.get('duration_ms', '?')} ms",
    )
    console.print(header)
    outputs = document.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        console.print(Text("(no outputs)", style="dim"))
        return
    for node_id, node_outputs in outputs.items():
        table = Table(title=safe(str(node_id)), title_justify="left", title_style="bold", show_header=False)
        table.add_column("output", style="cyan", no_wrap=True)
        table.add_column("value", overflow="fold")
        if isinstance(node_outputs, dict):
            for key, value in node_outputs.items():
                table.add_row(safe(str(key)), _value(value))
        else:
            table.add_row(Text("(value)", style="dim"), _value(node_outputs))
        console.print(table)


def render_workflows(console: Console, listing: Sequence[Mapping[str, Any]]) -> None:
    """The workflows the caller may see."""
    if not listing:
        console.print(Text("No workflows visible to you.", style="dim"))
        return
    table = Table("name", "description", "tags")
    for item in listing:
        tags = item.get("tags")
        table.add_row(
            safe(str(item.get("name", ""))),
            safe(str(item.get("description") or "")),
            safe(", ".join(str(t) for t in tags) if isinstance(tags, list) else ""),
        )
    console.print(table)


def render_workflow(console: Console, info: Mapping[str, Any]) -> None:
    """One workflow and the parameters `nexus run NAME -p key=value` takes."""
    console.print(Text.assemble(("Workflow ", "bold"), safe(str(info.get("name", "?")))))
    if info.get("description"):
        console.print(safe(str(info["description"])))
    schema = info.get("input_schema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not properties:
        console.print(Text("Takes free-form parameters: -p key=value ...", style="dim"))
        return
    required = schema.get("required", []) if isinstance(schema, dict) else []
    table = Table("parameter", "type", "required", "default", "description")
    for name, prop in properties.items():
        prop = prop if isinstance(prop, dict) else {}
        kind = prop.get("type", "any")
        table.add_row(
            safe(str(name)),
            safe(" | ".join(map(str, kind)) if isinstance(kind, list) else str(kind)),
            "yes" if name in required else "no",
            _value(prop["default"]) if "default" in prop else Text(""),
            safe(str(prop.get("description") or "")),
        )
    console.print(table)


def render_failure(console: Console, failure: Failure) -> None:
    """A failure on stderr: title, detail, then node id, retry-after and request id when known."""
    line = Text.assemble(("Error: ", "bold red"), safe(failure.title))
    if failure.detail:
        line.append(": ")
        line.append_text(safe(failure.detail))
    # Soft wrap: a message broken at the terminal width would defeat grep in logs and scripts.
    console.print(line, soft_wrap=True)
    for label, value in failure.facts:
        console.print(Text.assemble(f"  {label}: ", safe(value)), soft_wrap=True)


def _moment(iso: str | None) -> str:
    """An ISO timestamp to the second, for tables (JSON output keeps the full value)."""
    return iso[:19].replace("T", " ") if iso else ""


def render_keys(console: Console, rows: Iterable[Mapping[str, Any]]) -> None:
    """Stored API keys (never their secrets)."""
    table = Table("key id", "name", "roles", "tenants", "created", "revoked")
    for row in rows:
        table.add_row(
            safe(str(row["key_id"])),
            safe(str(row["name"])),
            safe(", ".join(row["roles"])),
            safe(", ".join(row.get("tenants", ()))),
            safe(_moment(row["created_at"])),
            safe(_moment(row["revoked_at"])),
        )
    console.print(table)
