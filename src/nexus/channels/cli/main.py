"""The CLI channel's client commands: log in and out, run, list and describe workflows on a server,
show its health, explain its authorization decisions (`authz.py`) and manage its tenants (`tenants.py`).

Start-up time is part of the contract: this module imports typer, the standard library and the
dependency-free `nexus.errors` only; each command imports the client, rich or the app stack itself.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nexus.channels.cli.authz import authz_app
from nexus.channels.cli.pairs import parse_params as parse_typed_pairs
from nexus.channels.cli.problem import Failure, failure_from_error
from nexus.channels.cli.tenants import tenant_prefix, tenants_app
from nexus.errors import AuthenticationError, InternalError, InvalidInputError, NexusError

if TYPE_CHECKING:
    from nexus.channels.cli.client import CliClient
    from nexus.channels.cli.login import Answers, SecondFactor

DEFAULT_URL = "http://127.0.0.1:8000"
USAGE = InvalidInputError.exit_code

app = typer.Typer(
    name="nexus",
    help="Run workflows on a Nexus server, serve a Nexus app, manage its API keys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
workflows_app = typer.Typer(help="Workflows on the server.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(workflows_app, name="workflows")
app.add_typer(authz_app, name="authz")
app.add_typer(tenants_app, name="tenants")


@dataclass(frozen=True, slots=True)
class Remote:
    """Where the client commands send their calls (the global options)."""

    url: str
    token: str | None
    timeout_s: float
    tenant: str | None = None
    """The tenant prefix every call names (`--tenant`); None for the platform's route."""

    def client(self) -> CliClient:
        """A client whose calls carry `--token`, else the cached login for this URL and tenant
        (renewed as needed)."""
        from nexus.channels.cli.client import CliClient
        from nexus.channels.cli.credentials import CachedLogin, CredentialStore

        source = None if self.token else CachedLogin(CredentialStore.default(), self.url, tenant=self.tenant)
        return CliClient(
            self.url, token=self.token, source=source, timeout_s=self.timeout_s, tenant=self.tenant
        )

    def anonymous(self) -> CliClient:
        """A client for the login conversation: it sends only what each step names (and the tenant)."""
        from nexus.channels.cli.client import CliClient

        return CliClient(self.url, timeout_s=self.timeout_s, tenant=self.tenant)

    @property
    def where(self) -> str:
        """The server, and the tenant when one is named (for messages)."""
        return self.url if self.tenant is None else f"{self.url} (tenant {self.tenant})"


@app.callback()
def options(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(metavar="URL", envvar="NEXUS_URL", help="The Nexus API server.")
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            metavar="TOKEN",
            envvar="NEXUS_TOKEN",
            help="API key or access token, sent as 'Authorization: Bearer' (default: the cached login).",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", min=0.1, envvar="NEXUS_TIMEOUT", help="Seconds to wait for an answer."
        ),
    ] = 60.0,
    tenant: Annotated[
        str | None,
        typer.Option(
            metavar="PREFIX",
            envvar="NEXUS_TENANT",
            help="Call as this tenant: its CLI prefix, sent as X-Nexus-Tenant (default: the platform).",
        ),
    ] = None,
) -> None:
    """Run workflows on a Nexus server, serve a Nexus app, manage its API keys."""
    with reporting():
        prefix = tenant_prefix(tenant)
    ctx.obj = Remote(url=url, token=token, timeout_s=timeout, tenant=prefix)


@contextlib.contextmanager
def reporting(*, as_json: bool = False) -> Iterator[None]:
    """Turn every failure into a message on stderr and the exit code of its error class; no tracebacks.

    With `as_json` the message is the problem document as JSON, so scripts can read the `code`.
    """
    try:
        yield
    except Failure as failure:
        _report(failure, as_json)
    except NexusError as error:
        _report(failure_from_error(error), as_json)
    except Exception as exc:  # noqa: BLE001  # users get a message and exit 70, never a traceback
        _report(Failure("Unexpected error", f"{type(exc).__name__}: {exc}", InternalError.exit_code), as_json)


def _report(failure: Failure, as_json: bool) -> None:
    if as_json:
        from nexus.channels.cli.render import print_json

        print_json(sys.stderr, failure.document())
        raise typer.Exit(failure.exit_code)
    from rich.console import Console

    from nexus.channels.cli.render import render_failure

    render_failure(Console(stderr=True), failure)
    raise typer.Exit(failure.exit_code)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`key=value` raw strings (the server coerces them by the input schema), `key:=<json>` typed."""
    return parse_typed_pairs(pairs)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of tables.")]


@app.command()
def run(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(metavar="WORKFLOW", help="The workflow's name.")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="KEY=VALUE",
            help="An input as key=value, or key:=JSON typed (repeat for more).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a workflow and print its outputs."""
    with reporting(as_json=as_json):
        params = parse_params(param or [])
        with ctx.obj.client() as client:
            document = client.run(workflow, params)
        _show(as_json, document, "render_result")


@workflows_app.command("list")
def list_workflows(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the workflows you may see."""
    with reporting(as_json=as_json):
        with ctx.obj.client() as client:
            listing = client.list_workflows()
        _show(as_json, {"workflows": listing} if as_json else listing, "render_workflows")


@workflows_app.command("describe")
def describe_workflow(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(metavar="WORKFLOW", help="The workflow's name.")],
    as_json: JsonFlag = False,
) -> None:
    """Show a workflow and the parameters it takes."""
    with reporting():
        with ctx.obj.client() as client:
            info = client.describe(workflow)
        _show(as_json, info, "render_workflow")


@workflows_app.command("share")
def share_workflow(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(metavar="WORKFLOW", help="The workflow's name.")],
    with_tenant: Annotated[
        str, typer.Option("--with", metavar="TENANT_ID", help="The tenant to share it with, by its id.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Share one of your tenant's workflows with another tenant (a tenant administrator, on
    `--tenant`'s route, where the server allows tenants to share)."""
    with reporting(as_json=as_json):
        with ctx.obj.client() as client:
            document = client.share_own_workflow(workflow, with_tenant)
        if as_json:
            from nexus.channels.cli.render import print_json

            print_json(sys.stdout, document)
            return
        from nexus.channels.cli.render import safe

        shared = f"Shared workflow {document.get('workflow')} with tenant {document.get('tenant_id')}."
        typer.echo(safe(shared).plain)


class SsoProtocol(StrEnum):
    OIDC = "oidc"
    SAML = "saml"


@app.command()
def login(
    ctx: typer.Context,
    username: Annotated[
        str | None, typer.Option("--username", "-u", metavar="USER", help="Asked for when not given.")
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from stdin (and the second-factor code from the next line).",
        ),
    ] = False,
    code: Annotated[
        str | None, typer.Option(metavar="CODE", help="The second-factor code, when one is due.")
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(metavar="METHOD", help="Second factor to answer with: totp, sms or recovery."),
    ] = None,
    phone: Annotated[
        str | None, typer.Option(metavar="PHONE", help="Phone number, to enroll text messages.")
    ] = None,
    sso: Annotated[
        SsoProtocol | None, typer.Option(help="Sign on in the browser through the server's provider.")
    ] = None,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="With --sso: print the address instead of opening it.")
    ] = False,
    reauth: Annotated[
        bool, typer.Option("--reauth", help="Prove your identity again for the cached session (step-up).")
    ] = False,
) -> None:
    """Log in to the server and cache the session for the other commands."""
    with reporting():
        from nexus.channels.cli import login as conversation

        remote: Remote = ctx.obj
        answers = conversation.Answers(
            interactive=sys.stdin.isatty(), password_stdin=password_stdin, code=code
        )
        factor = conversation.SecondFactor(method=method, phone=phone)
        with remote.anonymous() as client:
            if sso is not None:
                grant = conversation.sso_login(
                    client, sso.value, open_browser=not no_browser, answers=answers, factor=factor
                )
            elif reauth:
                grant = _reauthenticate(remote, client, answers, factor)
            else:
                grant = _password_login(remote, client, username, answers, factor)
            _keep(remote, client, grant)


def _password_login(
    remote: Remote, client: CliClient, username: str | None, answers: Answers, factor: SecondFactor
) -> dict[str, Any]:
    from nexus.channels.cli import login as conversation
    from nexus.channels.cli.credentials import CredentialStore

    if not username:
        if not answers.interactive:
            raise Failure("Missing input", "stdin is not a terminal: give --username.", USAGE)
        cached = CredentialStore.default().load(remote.url, tenant=remote.tenant)
        username = str(typer.prompt("Username", default=cached.username if cached else None, err=True))
    password = answers.password()
    try:
        return client.login(username, password)
    except Failure as failure:
        if not conversation.is_due(failure):
            raise
        return conversation.finish(client, failure, answers, factor)


def _reauthenticate(
    remote: Remote, client: CliClient, answers: Answers, factor: SecondFactor
) -> dict[str, Any]:
    from nexus.channels.cli import login as conversation
    from nexus.channels.cli.credentials import CredentialStore, not_logged_in

    cached = CredentialStore.default().load(remote.url, tenant=remote.tenant)
    if cached is None:
        raise not_logged_in(remote.url, tenant=remote.tenant)
    password = answers.password()
    try:
        return client.reauthenticate(cached.session_token, password)
    except Failure as failure:
        if not conversation.is_due(failure):
            raise
        return conversation.finish(client, failure, answers, factor)


def _keep(remote: Remote, client: CliClient, grant: dict[str, Any]) -> None:
    """Cache the login (ending the one it replaces) and say who is logged in until when."""
    import time

    from nexus.channels.cli import login as conversation
    from nexus.channels.cli.credentials import Credentials, CredentialStore, moment
    from nexus.channels.cli.render import safe

    store = CredentialStore.default()
    previous = store.load(remote.url, tenant=remote.tenant)
    fresh = Credentials.from_grant(grant, time.time(), previous=previous)
    try:
        store.save(remote.url, fresh, tenant=remote.tenant)
    except Failure:
        # Nowhere to keep it: end the new session rather than leave it live on the server unused.
        with contextlib.suppress(Failure):
            client.logout(fresh.session_token)
        raise
    if previous is not None and previous.session_token != fresh.session_token:
        with contextlib.suppress(Failure):  # the old session expires on its own if this fails
            client.logout(previous.session_token)
    roles = f"roles {', '.join(fresh.roles)}" if fresh.roles else "no roles"
    who = safe(f"{fresh.username} ({roles})").plain
    conversation.say(f"Logged in as {who} until {moment(fresh.session_expires_at)}.")


@app.command()
def logout(ctx: typer.Context) -> None:
    """End the cached session on the server and forget it here."""
    with reporting():
        from nexus.channels.cli.credentials import CredentialStore, moment

        remote: Remote = ctx.obj
        store = CredentialStore.default()
        cached = store.load(remote.url, tenant=remote.tenant)
        if cached is None:
            typer.echo(f"Not logged in to {remote.where}.")
            return
        ended = "The session has ended on the server."
        try:
            with remote.anonymous() as client:
                client.logout(cached.session_token)
        except Failure as failure:
            if failure.exit_code == AuthenticationError.exit_code:
                ended = "The session had already ended on the server."
            else:
                ended = (
                    f"The server could not end the session ({failure.title}); "
                    f"it stays valid there until {moment(cached.session_expires_at)}."
                )
        store.delete(remote.url, tenant=remote.tenant)
        typer.echo(f"Logged out of {remote.where} here. {ended}")


@app.command()
def whoami(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show who the server takes you for: user, roles and when you authenticated."""
    with reporting(as_json=as_json):
        from nexus.channels.cli.credentials import CredentialStore, moment

        remote: Remote = ctx.obj
        with remote.client() as client:
            document = client.whoami()
        cached = None if remote.token else CredentialStore.default().load(remote.url, tenant=remote.tenant)
        if cached is not None and cached.user_id == document.get("id"):
            document = {"username": cached.username, **document}
        if as_json:
            _show(True, document, "")
            return
        from nexus.channels.cli.render import safe

        roles = document.get("roles") or []
        name = document.get("username") or document.get("id")
        lines = [
            f"User: {name} ({document.get('id')}, {document.get('kind')})",
            f"Roles: {', '.join(map(str, roles)) or 'none'}",
            f"Authenticated: {moment(document.get('auth_time'))}",
            f"Server: {remote.where}",
        ]
        for line in lines:
            typer.echo(safe(line).plain)


@app.command()
def health(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the server's health: status, version, workflows served, readiness."""
    with reporting(as_json=as_json):
        remote: Remote = ctx.obj
        with remote.client() as client:
            document = client.health()
        if as_json:
            _show(True, document, "")
            return
        from nexus.channels.cli.render import safe

        lines = [
            f"Status: {document.get('status')}",
            f"Version: {document.get('version')}",
            f"Workflows: {document.get('workflows')}",
            f"Ready: {'yes' if document.get('ready') is True else 'no'}",
            f"Server: {remote.url}",
            *_cluster_lines(document.get("cluster")),
        ]
        for line in lines:
            typer.echo(safe(line).plain)


def _cluster_lines(cluster: Any) -> list[str]:
    """With clustering: this node and each live node, one line each."""
    if not isinstance(cluster, dict):
        return []
    nodes = cluster.get("nodes")
    lines = [f"Node: {cluster.get('node_id')}"]
    if not isinstance(nodes, list):
        return [*lines, "Cluster: unknown (the registry did not answer)"]
    lines.append(f"Cluster: {len(nodes)} node{'s' if len(nodes) != 1 else ''}")
    for node in nodes:
        if isinstance(node, dict):
            state = "ready" if node.get("ready") is True else "not ready"
            lines.append(f"  {node.get('id')}  api {node.get('api')}  mcp {node.get('mcp')}  {state}")
    return lines


def _show(as_json: bool, document: Any, renderer: str) -> None:
    from nexus.channels.cli import render

    if as_json:
        render.print_json(sys.stdout, document)
        return
    from rich.console import Console

    getattr(render, renderer)(Console(), document)


def main() -> None:
    """The client commands alone; the console script (`nexus.console:main`) adds the operator ones."""
    app(prog_name="nexus")
