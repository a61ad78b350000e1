"""The `nexus` console script: the CLI channel's client commands plus the operator commands.

Operator commands (serve, mcp, keys) build the app itself, so they live above `nexus.app`, not in
the channel. Start-up time matters: the app stack is imported inside each command only.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nexus.channels.cli.main import USAGE, JsonFlag, _show, app, reporting
from nexus.channels.cli.problem import Failure

if TYPE_CHECKING:
    from nexus.core.types import ApiKey

keys_app = typer.Typer(help="API keys in an app's state store.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(keys_app, name="keys")


AppSpec = Annotated[str, typer.Argument(metavar="MODULE:APP", help="Where the Nexus app is, e.g. myapp:app.")]


@app.command()
def serve(
    target: AppSpec,
    api_port: Annotated[
        int | None, typer.Option(metavar="PORT", help="Serve the REST and CLI channels here instead.")
    ] = None,
    mcp_port: Annotated[int | None, typer.Option(metavar="PORT", help="Serve MCP here instead.")] = None,
) -> None:
    """Serve an app's API and MCP ports until Ctrl-C."""
    with reporting():
        from nexus import admin

        admin.serve(target, api_port=api_port, mcp_port=mcp_port)


@app.command()
def mcp(target: AppSpec) -> None:
    """Serve an app's workflows as MCP tools over stdio."""
    with reporting():
        from nexus import admin

        admin.serve_mcp(target)


AppOption = Annotated[
    str | None, typer.Option("--app", metavar="MODULE:APP", help="Use this app's state store settings.")
]
StateUrlOption = Annotated[
    str | None,
    typer.Option(
        metavar="URL", envvar="NEXUS_STATE_URL", help="Use this state store, e.g. sqlite:///./nexus.db."
    ),
]


def _key_row(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "name": key.name,
        "roles": sorted(key.roles),
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A label for the key (who or what uses it).")],
    role: Annotated[
        list[str] | None,
        typer.Option("--role", "-r", metavar="ROLE", help="A role to grant (repeat for more)."),
    ] = None,
    app_spec: AppOption = None,
    state_url: StateUrlOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an API key and print it once: only its hash is stored."""
    with reporting():
        from nexus import admin

        issued = admin.create_key(app_spec, state_url, name, role or [])
        row = _key_row(issued.key)
        if as_json:
            from nexus.channels.cli.render import print_json

            print_json(sys.stdout, {**row, "api_key": issued.plaintext})
        else:
            # The key alone on stdout, so `KEY=$(nexus keys create ...)` captures exactly it.
            typer.echo(issued.plaintext)
            roles = ", ".join(row["roles"]) or "none"
            typer.echo(f"Created API key {row['key_id']} ({name!r}, roles: {roles}).", err=True)
        typer.echo("Warning: store this key now; it will not be shown again.", err=True)


@keys_app.command("list")
def list_keys(
    app_spec: AppOption = None, state_url: StateUrlOption = None, as_json: JsonFlag = False
) -> None:
    """List the API keys (ids, names and roles; never secrets)."""
    with reporting():
        from nexus import admin

        rows = [_key_row(key) for key in admin.list_keys(app_spec, state_url)]
        _show(as_json, {"keys": rows} if as_json else rows, "render_keys")


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key id shown by `nexus keys list`.")],
    app_spec: AppOption = None,
    state_url: StateUrlOption = None,
) -> None:
    """Revoke an API key; calls with it fail from then on."""
    with reporting():
        from nexus import admin

        if not admin.revoke_key(app_spec, state_url, key_id):
            raise Failure("No such key", f"No active API key with id {key_id!r}.", USAGE)
        typer.echo(f"Revoked API key {key_id}.")


def main() -> None:
    """The console script's entry point."""
    app(prog_name="nexus")
