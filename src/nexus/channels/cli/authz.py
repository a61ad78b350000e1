"""`nexus authz explain`: ask the server why a user, API key or set of roles is allowed or denied.

Client side only: the question is sent to the CLI channel's explain route, which needs
`cli:explain:authz`. Module level imports typer, the standard library and the CLI's light modules only
(`main` imports this module, so `main` itself is imported inside the command).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nexus.channels.cli.pairs import parse_pairs
from nexus.channels.cli.problem import Failure
from nexus.core.types import Channel
from nexus.errors import InvalidInputError

if TYPE_CHECKING:
    from rich.console import Console

    from nexus.channels.cli.main import Remote

USAGE = InvalidInputError.exit_code
MAX_DRAFT_BYTES = 1024 * 1024

authz_app = typer.Typer(
    help="Authorization on the server: why a call is allowed or denied.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


class SurfaceName(StrEnum):
    RESOURCES = "resources"
    HEALTH = "health"
    AUTHZ = "authz"
    TENANTS = "tenants"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def strict_json(raw: str | bytes) -> Any:
    """JSON as a server reads it: no NaN or Infinity, and nesting too deep is an error, not a crash."""
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def parse_attributes(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings as attributes; a value that reads as JSON (3, true, ["a"]) is taken as such."""
    attributes: dict[str, Any] = {}
    for key, raw in parse_pairs(pairs, what="attribute", option="--attr").items():
        try:
            attributes[key] = strict_json(raw)
        except ValueError:
            attributes[key] = raw
    return attributes


def read_draft(path: Path) -> dict[str, Any]:
    """The draft file: a JSON object with "rbac" and/or "abac" parts (the server checks the parts)."""
    try:
        with path.open("rb") as source:
            raw = source.read(MAX_DRAFT_BYTES + 1)
    except OSError as exc:
        raise Failure("Cannot read the draft", f"{path}: {exc.strerror or exc}.", USAGE) from None
    if len(raw) > MAX_DRAFT_BYTES:
        raise Failure("Invalid draft", f"{path} is larger than {MAX_DRAFT_BYTES} bytes.", USAGE)
    try:
        draft = strict_json(raw)
    except ValueError as exc:
        raise Failure("Invalid draft", f"{path} is not valid JSON: {exc}.", USAGE) from None
    if not isinstance(draft, dict):
        raise Failure("Invalid draft", f'{path} must hold {{"rbac": {{...}}, "abac": {{...}}}}.', USAGE)
    return draft


@authz_app.command("explain")
def explain(
    ctx: typer.Context,
    channel: Annotated[Channel, typer.Option(help="The channel the call would come over.")],
    action: Annotated[
        str, typer.Option(metavar="ACTION", help="What the call would do: read, execute, explain...")
    ],
    user: Annotated[str | None, typer.Option(metavar="USER", help="Explain for this username.")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", metavar="ID", help="Explain for this API key id.")
    ] = None,
    role: Annotated[
        list[str] | None, typer.Option(metavar="ROLE", help="A role held (repeat for more).")
    ] = None,
    attr: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="A user attribute; JSON values (3, true) stay typed."),
    ] = None,
    workflow: Annotated[str | None, typer.Option(metavar="WORKFLOW", help="The workflow called.")] = None,
    surface: Annotated[
        SurfaceName | None, typer.Option(help="A surface instead of (or, for resources, with) a workflow.")
    ] = None,
    client_address: Annotated[
        str | None, typer.Option("--client-address", metavar="IP", help="The caller's address.")
    ] = None,
    draft: Annotated[
        Path | None,
        typer.Option(metavar="FILE.json", help='Decide by {"rbac": ..., "abac": ...} instead.'),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of text.")] = False,
) -> None:
    """Explain the decision for a user, an API key or a set of roles, optionally under a draft."""
    from nexus.channels.cli.main import reporting

    with reporting(as_json=as_json):
        body: dict[str, Any] = {"channel": channel.value, "action": action, "roles": role or []}
        optional = {
            "user": user,
            "api_key": api_key,
            "workflow": workflow,
            "surface": surface.value if surface is not None else None,
            "client_address": client_address,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        if attr:
            body["attributes"] = parse_attributes(attr)
        if draft is not None:
            body["draft"] = read_draft(draft)
        remote: Remote = ctx.obj
        with remote.client() as client:
            document = client.explain(body)
        if as_json:
            import sys

            from nexus.channels.cli.render import print_json

            print_json(sys.stdout, document)
            return
        from rich.console import Console

        render_explanation(Console(), document)


def render_explanation(console: Console, document: dict[str, Any]) -> None:
    """The decision, why, the roles and permission behind it, and each applicable policy's outcome."""
    from rich.text import Text

    from nexus.channels.cli.render import safe

    def line(label: str, value: object) -> None:
        console.print(Text.assemble((f"{label}: ", "bold"), safe(str(value))), soft_wrap=True)

    line("Outcome", str(document.get("outcome", "?")).upper())
    line("Reason", document.get("reason", ""))
    if document.get("target"):
        line("Target", document["target"])
    principal = document.get("principal")
    if isinstance(principal, dict):
        who = principal.get("name") or principal.get("id")
        line("Principal", f"{who} ({principal.get('id')}, {principal.get('kind')})")
    roles = document.get("roles")
    if roles is not None:
        line("Roles", ", ".join(map(str, roles)) if roles else "none")
    if "permission" in document:
        line("Permission", document.get("permission") or "none")
    policies = document.get("policies") or []
    line("Policies", f"{len(policies)} applicable" if policies else "none apply")
    for policy in policies:
        if isinstance(policy, dict):
            outcome = "satisfied" if policy.get("satisfied") else "not satisfied"
            row = f"  {policy.get('name')} ({policy.get('effect')}): {outcome}; {policy.get('reason', '')}"
            console.print(safe(row), soft_wrap=True)
    if document.get("draft"):
        console.print(Text("Decided by the draft; the installed roles and policies are unchanged.", "dim"))
