"""The CLI channel's client commands: run, list and describe workflows on a Nexus server.

Start-up time is part of the contract: this module imports typer, the standard library and the
dependency-free `nexus.errors` only; each command imports the client, rich or the app stack itself.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nexus.channels.cli.problem import Failure, failure_from_error
from nexus.errors import InternalError, InvalidInputError, NexusError

if TYPE_CHECKING:
    from nexus.channels.cli.client import CliClient

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


@dataclass(frozen=True, slots=True)
class Remote:
    """Where the client commands send their calls (the global options)."""

    url: str
    token: str | None
    timeout_s: float

    def client(self) -> CliClient:
        from nexus.channels.cli.client import CliClient

        return CliClient(self.url, token=self.token, timeout_s=self.timeout_s)


@app.callback()
def options(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(metavar="URL", envvar="NEXUS_URL", help="The Nexus API server.")
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(metavar="TOKEN", envvar="NEXUS_TOKEN", help="API key, sent as 'Authorization: Bearer'."),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", min=0.1, envvar="NEXUS_TIMEOUT", help="Seconds to wait for an answer."
        ),
    ] = 60.0,
) -> None:
    """Run workflows on a Nexus server, serve a Nexus app, manage its API keys."""
    ctx.obj = Remote(url=url, token=token, timeout_s=timeout)


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


def parse_params(pairs: list[str]) -> dict[str, str]:
    """`key=value` strings as a dict of raw strings; the server coerces them by the input schema."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Failure("Invalid parameter", f"{pair!r}: expected -p key=value.", USAGE)
        if key in params:
            raise Failure("Invalid parameter", f"{key!r} is given more than once.", USAGE)
        params[key] = value
    return params


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of tables.")]


@app.command()
def run(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(metavar="WORKFLOW", help="The workflow's name.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="KEY=VALUE", help="An input as key=value (repeat for more)."),
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
