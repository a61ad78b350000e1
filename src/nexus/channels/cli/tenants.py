"""`nexus tenants ...`: list, show, create, suspend, resume and delete a server's tenants, share
workflows with them, and the `--tenant` prefix every command can name.

Client side only: the calls go to the CLI channel's `/admin/tenants` routes, which need
`cli:<action>:tenants` and a platform principal. Module level imports typer, the standard library
and the CLI's light modules only (`main` imports this module, so `main` is imported in each command).
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nexus.channels.cli.pairs import parse_pairs
from nexus.channels.cli.problem import Failure
from nexus.errors import InvalidInputError

if TYPE_CHECKING:
    from rich.console import Console

    from nexus.channels.cli.main import Remote

USAGE = InvalidInputError.exit_code
# A tenant's CLI prefix, as the server defines it; checked here only so that a typo never becomes
# a malformed header. Whether the prefix names a tenant is the server's answer.
_PREFIX = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_INTEGER_SETTINGS = frozenset({"mcp_port"})

tenants_app = typer.Typer(
    help="Tenants on the server (for platform administrators).", no_args_is_help=True, rich_markup_mode=None
)


def tenant_prefix(given: str | None) -> str | None:
    """`--tenant` / `NEXUS_TENANT` as the prefix to send; empty means none (the platform's route)."""
    if given is None or not given.strip():
        return None
    prefix = given.strip()
    if _PREFIX.fullmatch(prefix) is None:
        raise Failure(
            "Invalid tenant",
            f"{prefix[:64]!r}: a tenant prefix is lowercase letters, digits, '_' and '-' (up to 63).",
            USAGE,
        )
    return prefix


def tenant_config(pairs: list[str], typed: dict[str, Any]) -> dict[str, Any]:
    """`--config key=value` pairs and the typed options (`--mcp-port` ...) as one config object.

    `mcp_port` is a number; every other value is sent as written (the server checks keys and values).
    A key given twice, by either form, is a usage error.
    """
    config: dict[str, Any] = {}
    for key, raw in parse_pairs(pairs, what="setting", option="--config").items():
        config[key] = _integer(key, raw) if key in _INTEGER_SETTINGS else raw
    for key, value in typed.items():
        if value is None:
            continue
        if key in config:
            option = "--" + key.replace("_", "-")
            raise Failure("Invalid setting", f"{key!r} is given by both {option} and --config.", USAGE)
        config[key] = value
    return config


def _integer(key: str, raw: str) -> int:
    text = raw.strip()
    if not text.isascii() or not text.isdigit():
        raise Failure("Invalid setting", f"{key} must be a whole number, not {raw[:32]!r}.", USAGE)
    return int(text)


def _remote(ctx: typer.Context) -> Remote:
    remote: Remote = ctx.obj
    return remote


TenantArg = Annotated[str, typer.Argument(metavar="TENANT_ID", help="The tenant's id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of text.")]


@tenants_app.command("list")
def list_tenants(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the tenants: id, name, status and routes."""
    from nexus.channels.cli.main import reporting

    with reporting(as_json=as_json):
        with _remote(ctx).client() as client:
            tenants = client.list_tenants()
        if as_json:
            _print_json({"tenants": tenants})
            return
        from rich.console import Console

        render_tenants(Console(), tenants)


@tenants_app.command("show")
def show_tenant(ctx: typer.Context, tenant_id: TenantArg, as_json: JsonOption = False) -> None:
    """Show a tenant, what it uses now and its quota limits."""
    from nexus.channels.cli.main import reporting

    with reporting(as_json=as_json):
        with _remote(ctx).client() as client:
            document = client.show_tenant(tenant_id)
        if as_json:
            _print_json(document)
            return
        from rich.console import Console

        render_tenant(Console(), document)


@tenants_app.command("create")
def create_tenant(
    ctx: typer.Context,
    tenant_id: TenantArg,
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="The tenant's display name.")],
    config: Annotated[
        list[str] | None,
        typer.Option("--config", metavar="KEY=VALUE", help="A setting as key=value (repeat for more)."),
    ] = None,
    api_subdomain: Annotated[
        str | None, typer.Option(metavar="LABEL", help="Its API host label (LABEL.<base domain>).")
    ] = None,
    cli_prefix: Annotated[
        str | None, typer.Option(metavar="PREFIX", help="What `nexus --tenant PREFIX` names.")
    ] = None,
    mcp_port: Annotated[
        int | None, typer.Option(metavar="PORT", min=1, max=65535, help="Its own MCP listener's port.")
    ] = None,
    quota_profile: Annotated[
        str | None, typer.Option(metavar="PROFILE", help="A quota profile, e.g. enterprise_large.")
    ] = None,
    compliance_level: Annotated[
        str | None, typer.Option(metavar="LEVEL", help="A label its workflows read, e.g. hipaa_sox.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a tenant."""
    from nexus.channels.cli.main import reporting

    with reporting(as_json=as_json):
        typed = {
            "api_subdomain": api_subdomain,
            "cli_prefix": cli_prefix,
            "mcp_port": mcp_port,
            "quota_profile": quota_profile,
            "compliance_level": compliance_level,
        }
        settings = tenant_config(config or [], typed)
        with _remote(ctx).client() as client:
            document = client.create_tenant(tenant_id, name, settings)
        _done(as_json, document, f"Created tenant {document.get('tenant_id')} ({document.get('name')}).")


@tenants_app.command("suspend")
def suspend_tenant(ctx: typer.Context, tenant_id: TenantArg, as_json: JsonOption = False) -> None:
    """Suspend a tenant: every channel refuses its calls until it is resumed."""
    from nexus.channels.cli.main import reporting

    with reporting(as_json=as_json):
        with _remote(ctx).client() as client:
            document = client.suspend_tenant(tenant_id)
        _done(as_json, document, f"Suspended tenant {document.get('tenant_id')}; its calls are refused.")


@tenants_app.command("resume")
def resume_tenant(ctx: typer.Context, tenant_id: TenantArg, as_json: JsonOption = False) -> None:
    """Resume a suspended tenant: its calls are served again."""
    from nexus.channels.cli.main import reporting

    with reporting(as_json=as_json):
        with _remote(ctx).client() as client:
            document = client.resume_tenant(tenant_id)
        _done(as_json, document, f"Resumed tenant {document.get('tenant_id')}; its calls are served.")


@tenants_app.command("delete")
def delete_tenant(
    ctx: typer.Context,
    tenant_id: TenantArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a tenant and, with strict isolation, all of its data (asks first unless --yes)."""
    from nexus.channels.cli.main import reporting

    with reporting(as_json=as_json):
        if not yes:
            confirm(tenant_id)
        with _remote(ctx).client() as client:
            document = client.delete_tenant(tenant_id)
        _done(as_json, document, f"Deleted tenant {document.get('tenant_id')}.")


WorkflowArg = Annotated[str, typer.Argument(metavar="WORKFLOW", help="The workflow's name.")]


@tenants_app.command("share")
def share_workflow(
    ctx: typer.Context, tenant_id: TenantArg, workflow: WorkflowArg, as_json: JsonOption = False
) -> None:
    """Serve a tenant-scoped workflow of other tenants on this tenant's routes too."""
    from nexus.channels.cli.main import reporting

    with reporting(as_json=as_json):
        with _remote(ctx).client() as client:
            document = client.share_workflow(tenant_id, workflow)
        _done(
            as_json,
            document,
            f"Shared workflow {document.get('workflow')} with tenant {document.get('tenant_id')}.",
        )


@tenants_app.command("unshare")
def unshare_workflow(
    ctx: typer.Context, tenant_id: TenantArg, workflow: WorkflowArg, as_json: JsonOption = False
) -> None:
    """Take back a workflow shared with a tenant: its routes no longer serve it."""
    from nexus.channels.cli.main import reporting

    with reporting(as_json=as_json):
        with _remote(ctx).client() as client:
            document = client.share_workflow(tenant_id, workflow, share=False)
        message = (
            f"Workflow {document.get('workflow')} is not shared with tenant {document.get('tenant_id')}."
        )
        _done(as_json, document, message)


def confirm(tenant_id: str) -> None:
    """Ask on the terminal before deleting; without a terminal, --yes is required."""
    from nexus.channels.cli.render import safe

    if not sys.stdin.isatty():
        raise Failure("Confirmation required", "stdin is not a terminal: give --yes to delete.", USAGE)
    shown = safe(tenant_id).plain
    question = f"Delete tenant {shown} and all of its data? This cannot be undone"
    if not typer.confirm(question, default=False, err=True):
        raise Failure("Not deleted", f"Tenant {shown} was left as it is.", USAGE)


def _print_json(document: Any) -> None:
    from nexus.channels.cli.render import print_json

    print_json(sys.stdout, document)


def _done(as_json: bool, document: dict[str, Any], message: str) -> None:
    if as_json:
        _print_json(document)
        return
    from nexus.channels.cli.render import safe

    typer.echo(safe(message).plain)


_LABELS = {
    "api_subdomain": "API subdomain",
    "cli_prefix": "CLI prefix",
    "mcp_port": "MCP port",
    "compliance_level": "Compliance level",
}
_ROUTES = (("api_subdomain", "api"), ("cli_prefix", "cli"), ("mcp_port", "mcp"))


def render_tenants(console: Console, tenants: list[dict[str, Any]]) -> None:
    """The tenants as a table (nothing from the server is taken as markup)."""
    from rich.table import Table

    from nexus.channels.cli.render import safe

    table = Table("tenant id", "name", "status", "routes", "quota profile", "created")
    table.columns[0].no_wrap = True
    for tenant in tenants:
        config = _object(tenant.get("config"))
        routes = ", ".join(f"{label} {config[key]}" for key, label in _ROUTES if config.get(key) is not None)
        table.add_row(
            safe(str(tenant.get("tenant_id", ""))),
            safe(str(tenant.get("name", ""))),
            safe(str(tenant.get("status", ""))),
            safe(routes),
            safe(_text(config.get("quota_profile"))),
            safe(_short(tenant.get("created_at"))),
        )
    console.print(table)


def render_tenant(console: Console, document: dict[str, Any]) -> None:
    """One tenant: who, status, settings, then what it uses against its limits."""
    from rich.table import Table
    from rich.text import Text

    from nexus.channels.cli.render import safe

    def line(label: str, value: object) -> None:
        console.print(Text.assemble((f"{label}: ", "bold"), safe(_text(value))), soft_wrap=True)

    line("Tenant", document.get("tenant_id"))
    line("Name", document.get("name"))
    line("Status", document.get("status"))
    line("Created", _moment(document.get("created_at")))
    if document.get("suspended_at"):
        line("Suspended", _moment(document.get("suspended_at")))
    config = _object(document.get("config"))
    for key, value in sorted(config.items()):
        if key != "quota_profile":  # shown with the limits below
            line(_LABELS.get(key) or safe(str(key)).plain, value)
    shared = document.get("shared_workflows")
    if isinstance(shared, list) and shared:
        line("Shared workflows", ", ".join(str(name) for name in shared))
    quota = _object(document.get("quota"))
    line("Quota profile", quota.get("profile"))
    limits = quota.get("limits")
    usage = _object(document.get("usage"))
    table = Table("resource", "in use", "limit")
    names = list(limits) if isinstance(limits, dict) else list(usage)
    for resource in names:
        limit = limits.get(resource) if isinstance(limits, dict) else "unknown profile"
        used = usage.get(resource)
        table.add_row(
            safe(str(resource)),
            safe(_text(used)),
            safe("no limit" if limit is None else str(limit)),
        )
    console.print(table)


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _short(iso: object) -> str:
    """An ISO time to the second, for tables (`--json` keeps the whole value)."""
    return iso[:19].replace("T", " ") if isinstance(iso, str) else ""


def _moment(iso: object) -> str:
    from nexus.channels.cli.credentials import moment

    return moment(iso) if isinstance(iso, str) else ""
