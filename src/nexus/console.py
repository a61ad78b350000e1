"""The `nexus` console script: the CLI channel's client commands plus the operator commands.

Operator commands (serve, mcp, keys, users, audit) build the app itself, so they live above
`nexus.app`, not in the channel. Start-up time matters: the app stack is imported inside each command only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from nexus.channels.cli.main import USAGE, JsonFlag, _show, app, reporting
from nexus.channels.cli.pairs import parse_pairs
from nexus.channels.cli.problem import Failure

if TYPE_CHECKING:
    from nexus.app import Nexus
    from nexus.core.audit_chain import AuditVerification
    from nexus.core.auth.model import User
    from nexus.core.types import ApiKey

T = TypeVar("T")

keys_app = typer.Typer(help="API keys in an app's state store.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(keys_app, name="keys")
users_app = typer.Typer(
    help="Local users of an app (its state store).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(users_app, name="users")
audit_app = typer.Typer(
    help="The audit trail of an app (its state store): verify it, purge what expired.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(audit_app, name="audit")


AppSpec = Annotated[str, typer.Argument(metavar="MODULE:APP", help="Where the Nexus app is, e.g. myapp:app.")]
TenantsOption = Annotated[
    str | None,
    typer.Option(
        "--tenants",
        metavar="A,B",
        help="The tenants it belongs to: ids, comma-separated (none: the platform's routes only).",
    ),
]


def _tenant_list(given: str | None) -> list[str]:
    """`--tenants a,b` as ["a", "b"]; blanks around the commas are dropped, an empty value is none."""
    return [part.strip() for part in (given or "").split(",") if part.strip()]


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
        "tenants": sorted(key.tenants),
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
    tenants: TenantsOption = None,
    app_spec: AppOption = None,
    state_url: StateUrlOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an API key and print it once: only its hash is stored."""
    with reporting():
        from nexus import admin

        issued = admin.create_key(app_spec, state_url, name, role or [], _tenant_list(tenants))
        row = _key_row(issued.key)
        if as_json:
            from nexus.channels.cli.render import print_json

            print_json(sys.stdout, {**row, "api_key": issued.plaintext})
        else:
            # The key alone on stdout, so `KEY=$(nexus keys create ...)` captures exactly it.
            typer.echo(issued.plaintext)
            roles = ", ".join(row["roles"]) or "none"
            members_of = ", ".join(row["tenants"]) or "none"
            typer.echo(
                f"Created API key {row['key_id']} ({name!r}, roles: {roles}, tenants: {members_of}).",
                err=True,
            )
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


@keys_app.command("rotate-signing")
def rotate_signing_key(
    algorithm: Annotated[
        str, typer.Option("--algorithm", metavar="ALG", help="EdDSA (Ed25519) or ES256 (P-256).")
    ] = "EdDSA",
    app_spec: AppOption = None,
    state_url: StateUrlOption = None,
) -> None:
    """Sign login tokens with a new key; tokens signed before stay valid until they expire."""
    with reporting():
        from nexus import admin

        kid = admin.rotate_signing_key(app_spec, state_url, algorithm)
        typer.echo(f"Tokens are now signed with key {kid}; serving nodes pick it up within 30 s.")


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


# -- users ---------------------------------------------------------------------------------------

UserArg = Annotated[str, typer.Argument(metavar="USERNAME", help="The user's login name.")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


def _on_app(spec: str, operation: Callable[[Nexus], Coroutine[Any, Any, T]]) -> T:
    """Run one user operation on the app `spec` names; a wrong name or setting is a usage error."""
    import asyncio

    from nexus import admin
    from nexus.errors import ConfigurationError

    target = admin.load_app(spec)
    try:
        return asyncio.run(operation(target))
    except ConfigurationError as error:  # no such user, a duplicate, or auth not enabled
        raise Failure(error.title, error.message, USAGE) from None


def _new_password(from_stdin: bool) -> str:
    """The first line of stdin, or a hidden prompt typed twice on a terminal."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise Failure("Missing input", "Expected the password on stdin.", USAGE)
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise Failure("Missing input", "stdin is not a terminal: give --password-stdin.", USAGE)
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    return password


def _attributes(pairs: list[str]) -> dict[str, str]:
    return parse_pairs(pairs, what="attribute", option="--attribute")


def _user_row(user: User) -> dict[str, Any]:
    from nexus.core.auth.model import mask_phone

    return {
        "user_id": user.user_id,
        "username": user.username,
        "source": user.source,
        "roles": sorted(user.roles),
        "attributes": dict(user.attributes),
        "phone": mask_phone(user.phone) if user.phone else None,
        "disabled": user.disabled,
        "tenants": sorted(user.tenants),
        "created_at": user.created_at.isoformat(),
    }


@users_app.command("create")
def create_user(
    target: AppSpec,
    username: UserArg,
    role: Annotated[
        list[str] | None,
        typer.Option("--role", "-r", metavar="ROLE", help="A role to grant (repeat for more)."),
    ] = None,
    attribute: Annotated[
        list[str] | None,
        typer.Option("--attribute", "-a", metavar="KEY=VALUE", help="An attribute for ABAC (repeat)."),
    ] = None,
    phone: Annotated[
        str | None, typer.Option(metavar="PHONE", help="Phone number for text-message codes.")
    ] = None,
    tenants: TenantsOption = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a local user (the password is stored as an argon2id hash)."""
    with reporting():
        attributes = _attributes(attribute or [])
        members_of = _tenant_list(tenants)
        password = _new_password(password_stdin)
        user = _on_app(
            target,
            lambda nx: nx.create_user(
                username, password, roles=role or [], attributes=attributes, phone=phone, tenants=members_of
            ),
        )
        roles = ", ".join(sorted(user.roles)) or "none"
        joined = ", ".join(sorted(user.tenants)) or "none"
        typer.echo(f"Created user {user.username} ({user.user_id}, roles: {roles}, tenants: {joined}).")


@users_app.command("update")
def update_user(
    target: AppSpec,
    username: UserArg,
    tenants: Annotated[
        str | None,
        typer.Option(
            "--tenants",
            metavar="A,B",
            help="The tenant ids, comma-separated, the user may log in to (replacing the old ones; "
            "an empty value leaves only the platform's routes).",
        ),
    ] = None,
) -> None:
    """Change a user; new tenants end the user's sessions."""
    with reporting():
        if tenants is None:
            raise Failure("Nothing to change", "Give --tenants A,B (or --tenants '' for none).", USAGE)
        members_of = _tenant_list(tenants)
        user = _on_app(target, lambda nx: nx.update_user(username, tenants=members_of))
        joined = ", ".join(sorted(user.tenants)) or "none"
        typer.echo(f"Updated {user.username} (tenants: {joined}); their sessions have ended.")


@users_app.command("list")
def list_users(target: AppSpec, as_json: JsonFlag = False) -> None:
    """List the users (names, roles, state; never password hashes)."""
    with reporting():
        rows = [_user_row(user) for user in _on_app(target, lambda nx: nx.list_users())]
        if as_json:
            _show(True, {"users": rows}, "")
            return
        from rich.console import Console
        from rich.table import Table

        from nexus.channels.cli.render import safe

        table = Table("username", "source", "roles", "tenants", "disabled", "created")
        for row in rows:
            table.add_row(
                safe(row["username"]),
                safe(row["source"]),
                safe(", ".join(row["roles"])),
                safe(", ".join(row["tenants"])),
                "yes" if row["disabled"] else "",
                safe(row["created_at"][:19].replace("T", " ")),
            )
        Console().print(table)


@users_app.command("delete")
def delete_user(target: AppSpec, username: UserArg) -> None:
    """Delete a user with their factors; their sessions end."""
    with reporting():
        if not _on_app(target, lambda nx: nx.delete_user(username)):
            raise Failure("No such user", f"No user named {username!r}.", USAGE)
        typer.echo(f"Deleted user {username}.")


@users_app.command("passwd")
def set_password(target: AppSpec, username: UserArg, password_stdin: PasswordStdin = False) -> None:
    """Set a local user's password; their sessions end."""
    with reporting():
        password = _new_password(password_stdin)
        _on_app(target, lambda nx: nx.set_password(username, password))
        typer.echo(f"Changed the password of {username}; their sessions have ended.")


@users_app.command("disable")
def disable_user(target: AppSpec, username: UserArg) -> None:
    """Refuse a user's logins and end their sessions."""
    with reporting():
        _on_app(target, lambda nx: nx.update_user(username, disabled=True))
        typer.echo(f"Disabled {username}; their sessions have ended.")


@users_app.command("enable")
def enable_user(target: AppSpec, username: UserArg) -> None:
    """Let a disabled user log in again."""
    with reporting():
        _on_app(target, lambda nx: nx.update_user(username, disabled=False))
        typer.echo(f"Enabled {username}.")


@users_app.command("revoke-sessions")
def revoke_sessions(target: AppSpec, username: UserArg) -> None:
    """End every session of a user, and every token derived from them."""
    with reporting():
        count = _on_app(target, lambda nx: nx.revoke_sessions(username))
        typer.echo(f"Ended {count} session{'' if count == 1 else 's'} of {username}.")


# -- audit ---------------------------------------------------------------------------------------


def _verification_lines(result: AuditVerification) -> list[str]:
    if result.intact:
        lines = [
            f"Audit trail intact: {result.checked} records verified "
            f"(sequence {result.first_seq} to {result.last_seq}); head hash {result.head_hash}."
        ]
    else:
        at = f" at record {result.broken_seq}" if result.broken_seq is not None else ""
        lines = [f"Audit trail BROKEN{at}: {result.reason}.", f"{result.checked} records verified before it."]
    if result.first_seq > 1:
        lines.append(f"Records before {result.first_seq} were purged; the chain starts at their anchor.")
    if result.unchained:
        lines.append(f"{result.unchained} records lie outside the chain: an older node's, or forged.")
    return lines


@audit_app.command("verify")
def verify_audit(target: AppSpec, as_json: JsonFlag = False) -> None:
    """Recompute the audit trail's hash chain; exit 65 when it is broken."""
    from nexus.errors import AuditIntegrityError

    with reporting(as_json=as_json):
        result = _on_app(target, lambda nx: nx.verify_audit_log())
        if as_json:
            import dataclasses

            from nexus.channels.cli.render import print_json

            print_json(sys.stdout, dataclasses.asdict(result))
        else:
            typer.echo("\n".join(_verification_lines(result)))
    if not result.intact:
        raise typer.Exit(AuditIntegrityError.exit_code)


@audit_app.command("purge")
def purge_audit(target: AppSpec) -> None:
    """Delete the audit records older than the app's retention now (serving apps do it hourly)."""
    from nexus.core.compliance import compliance_policy

    async def purge(nx: Nexus) -> tuple[int, int | None]:
        count = await nx.purge_audit_log()
        return count, compliance_policy(nx.auth.compliance_mode, nx.auth.audit_log_retention).retention_days

    with reporting():
        count, days = _on_app(target, purge)
        if days is None:
            typer.echo("Audit records are kept forever (no app.auth.audit_log_retention): none purged.")
        else:
            typer.echo(f"Purged {count} audit record{'' if count == 1 else 's'} older than {days} days.")


def main() -> None:
    """The console script's entry point."""
    app(prog_name="nexus")
