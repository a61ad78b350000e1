"""The `nexus` typer app, driven by CliRunner against a real server on 127.0.0.1 (uvicorn, real pipeline)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner, Result

from nexus.backends.counters import MemoryCounterStore
from nexus.backends.memory import MemoryAuditSink, MemoryKeyStore
from nexus.channels.asgi import HotRouter
from nexus.channels.cli.main import parse_params
from nexus.channels.cli.problem import Failure
from nexus.channels.cli.server import cli_routes
from nexus.channels.http import HttpOptions
from nexus.console import app
from nexus.core.audit import Auditor
from nexus.core.authorization import AllowAll
from nexus.core.catalog import Catalog
from nexus.core.identity import ApiKeyAuthenticator, new_api_key
from nexus.core.pipeline import Pipeline
from nexus.core.ratelimit import Limiter, NoLimit, RateLimiter
from nexus.core.telemetry import NoopMeter, SystemClock
from nexus.workflow import AsyncLocalRuntime, WorkflowBuilder

runner = CliRunner()


def catalog() -> Catalog:
    result = Catalog()
    add = WorkflowBuilder().add_input("a", int).add_input("b", int, default=0)
    add.add_node("PythonCodeNode", "add", {"code": "result = a + b"})
    result.register("add", add.build(), description="Add two integers", tags=["math"])
    fail = WorkflowBuilder().add_input("reason", str)
    fail.add_node("PythonCodeNode", "explode", {"code": "raise ValueError(reason)"})
    result.register("explode", fail.build(), description="Always fails")
    return result


async def always_ready() -> bool:
    return True


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@contextlib.contextmanager
def serving(*, rate_limit: int | None = None) -> Iterator[tuple[str, str]]:
    """Serve the CLI routes over a real pipeline (API keys on); yields the URL and a valid key."""
    clock = SystemClock()
    keys, counters = MemoryKeyStore(), MemoryCounterStore()
    issued = new_api_key("tester", (), clock)
    asyncio.run(keys.add(issued.key))
    limiter: Limiter = RateLimiter(counters, rate_limit) if rate_limit else NoLimit()
    pipeline = Pipeline(
        catalog=catalog(),
        authenticator=ApiKeyAuthenticator(keys, clock, cache_ttl_s=0),
        authorizer=AllowAll(),
        limiter=limiter,
        auditor=Auditor(MemoryAuditSink(), clock),
        meter=NoopMeter(),
        clock=clock,
        runtime=AsyncLocalRuntime(),
    )
    options = HttpOptions(4096, False, "/metrics", None, always_ready, True, "t", "0")
    # The socket listens before uvicorn starts, so early requests wait in the backlog: no polling.
    sock = listening_socket()
    config = uvicorn.Config(HotRouter(cli_routes(pipeline, options)), lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", issued.plaintext
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, str]]:
    with serving() as where:
        yield where


def nexus(server: tuple[str, str], *args: str, token: bool = True) -> Result:
    url, key = server
    env = {"NEXUS_URL": url, "NEXUS_TOKEN": key if token else None}
    return runner.invoke(app, list(args), env=env)


def closed_port_url() -> str:
    sock = listening_socket()
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


# -- run -------------------------------------------------------------------------------------------


def test_run_json_prints_the_result_document(server: tuple[str, str]) -> None:
    result = nexus(server, "run", "add", "-p", "a=2", "--param", "b=40", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["workflow"] == "add"
    assert document["outputs"] == {"add": {"result": 42}}
    assert result.stderr == ""


def test_run_renders_each_node_output_readably(server: tuple[str, str]) -> None:
    result = nexus(server, "run", "add", "-p", "a=5")
    assert result.exit_code == 0, result.stderr
    assert "Workflow add" in result.stdout
    line = next(line for line in result.stdout.splitlines() if "result" in line)
    assert "5" in line


def test_an_invalid_value_exits_2_with_the_validators_message(server: tuple[str, str]) -> None:
    result = nexus(server, "run", "add", "-p", "a=two")
    assert result.exit_code == 2
    assert "Error: Invalid input" in result.stderr
    assert "two" in result.stderr
    assert result.stdout == ""


def test_an_unknown_workflow_exits_2(server: tuple[str, str]) -> None:
    result = nexus(server, "run", "nosuch")
    assert result.exit_code == 2
    assert "Workflow not found" in result.stderr


def test_a_failing_workflow_exits_1_naming_the_node(server: tuple[str, str]) -> None:
    result = nexus(server, "run", "explode", "-p", "reason=boom")
    assert result.exit_code == 1
    assert "Error: Workflow failed" in result.stderr
    assert "node: explode" in result.stderr
    assert "request id: " in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_without_a_token_the_command_exits_77(server: tuple[str, str]) -> None:
    result = nexus(server, "run", "add", "-p", "a=1", token=False)
    assert result.exit_code == 77
    assert "Authentication required" in result.stderr


def test_a_wrong_token_given_by_option_exits_77(server: tuple[str, str]) -> None:
    url, _ = server
    result = runner.invoke(app, ["--url", url, "--token", "nxk_000000000000_wrong", "workflows", "list"])
    assert result.exit_code == 77


@pytest.mark.parametrize("pair", ["novalue", "=5"])
def test_a_malformed_param_exits_2_before_any_call(pair: str) -> None:
    result = runner.invoke(app, ["--url", closed_port_url(), "run", "add", "-p", pair])
    assert result.exit_code == 2
    assert "expected -p key=value" in result.stderr


def test_params_split_on_the_first_equals_and_refuse_repeats() -> None:
    assert parse_params(["q=a=b", "empty="]) == {"q": "a=b", "empty": ""}
    with pytest.raises(Failure, match="more than once"):
        parse_params(["a=1", "a=2"])


def test_the_rate_limit_exits_75_with_retry_after() -> None:
    with serving(rate_limit=1) as where:
        assert nexus(where, "run", "add", "-p", "a=1").exit_code == 0
        limited = nexus(where, "run", "add", "-p", "a=1")
    assert limited.exit_code == 75
    assert "retry after (s): " in limited.stderr


# -- transport failures ---------------------------------------------------------------------------


def test_a_refused_connection_names_the_url_and_exits_69() -> None:
    url = closed_port_url()
    result = runner.invoke(app, ["--url", url, "workflows", "list"])
    assert result.exit_code == 69
    assert url in result.stderr
    assert "Traceback" not in result.stderr


def test_a_server_that_never_answers_times_out_with_exit_69() -> None:
    silent = listening_socket()  # accepts into the backlog, never replies
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        result = runner.invoke(app, ["--url", url, "--timeout", "0.2", "run", "add"])
    finally:
        silent.close()
    assert result.exit_code == 69
    assert "no answer within 0.2 s" in result.stderr


def test_an_invalid_url_is_a_usage_error() -> None:
    result = runner.invoke(app, ["--url", "127.0.0.1:8000", "workflows", "list"])
    assert result.exit_code == 2
    assert "Invalid server URL: '127.0.0.1:8000'" in result.stderr


# -- workflows ------------------------------------------------------------------------------------


def test_workflows_list_json_and_table(server: tuple[str, str]) -> None:
    as_json = nexus(server, "workflows", "list", "--json")
    assert as_json.exit_code == 0
    assert [w["name"] for w in json.loads(as_json.stdout)["workflows"]] == ["add", "explode"]
    table = nexus(server, "workflows", "list")
    assert table.exit_code == 0
    assert "Add two integers" in table.stdout
    assert "Always fails" in table.stdout


def test_workflows_describe_shows_the_parameters(server: tuple[str, str]) -> None:
    result = nexus(server, "workflows", "describe", "add")
    assert result.exit_code == 0, result.stderr
    row_a = next(line for line in result.stdout.splitlines() if " a " in line)
    assert "integer" in row_a
    assert "yes" in row_a
    schema = json.loads(nexus(server, "workflows", "describe", "add", "--json").stdout)["input_schema"]
    assert schema["required"] == ["a"]


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "run" in result.output
    assert "workflows" in result.output


# -- keys -----------------------------------------------------------------------------------------


def test_keys_create_list_revoke_on_a_state_url(tmp_path: Path) -> None:
    state = ["--state-url", f"sqlite:///{tmp_path / 'state.db'}"]
    created = runner.invoke(app, ["keys", "create", "ci", "--role", "admin", "-r", "ops", *state])
    assert created.exit_code == 0, created.stderr
    plaintext = created.stdout.strip()
    assert plaintext.startswith("nxk_")
    assert "will not be shown again" in created.stderr
    listing = runner.invoke(app, ["keys", "list", "--json", *state])
    [key] = json.loads(listing.stdout)["keys"]
    assert (key["name"], key["roles"], key["revoked_at"]) == ("ci", ["admin", "ops"], None)
    assert plaintext not in listing.stdout
    assert key["key_id"] in plaintext
    revoked = runner.invoke(app, ["keys", "revoke", key["key_id"], *state])
    assert revoked.exit_code == 0
    assert json.loads(runner.invoke(app, ["keys", "list", "--json", *state]).stdout)["keys"][0]["revoked_at"]
    again = runner.invoke(app, ["keys", "revoke", "nosuchkey", *state])
    assert again.exit_code == 2
    assert "No such key" in again.stderr


def test_keys_need_exactly_one_state_store() -> None:
    result = runner.invoke(app, ["keys", "list"])
    assert result.exit_code == 2
    assert "--app MODULE:APP or --state-url URL" in result.stderr


def test_a_bad_state_url_is_reported_not_raised() -> None:
    result = runner.invoke(app, ["keys", "list", "--state-url", "nonsense"])
    assert result.exit_code == 70
    assert "state_url" in result.stderr
    assert "Traceback" not in result.stderr


# -- serve / mcp: finding the app -----------------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


def test_keys_use_the_state_store_of_the_app_named_by_app(app_dir: Path) -> None:
    db = app_dir / "app_state.db"
    (app_dir / "cli_keys_app.py").write_text(
        f"from nexus import Nexus\napplication = Nexus(state_url='sqlite:///{db}')\n"
    )
    created = runner.invoke(app, ["keys", "create", "bot", "--app", "cli_keys_app:application"])
    assert created.exit_code == 0, created.stderr
    listing = runner.invoke(app, ["keys", "list", "--json", "--state-url", f"sqlite:///{db}"])
    assert [k["name"] for k in json.loads(listing.stdout)["keys"]] == ["bot"]


@pytest.mark.parametrize("command", ["serve", "mcp"])
def test_a_missing_module_exits_2_without_a_traceback(app_dir: Path, command: str) -> None:
    result = runner.invoke(app, [command, "no_such_module_xyz:app"])
    assert result.exit_code == 2
    assert "No module named 'no_such_module_xyz'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_error_inside_the_app_module_names_its_file_and_line(app_dir: Path) -> None:
    (app_dir / "cli_broken_app.py").write_text("x = 1\nraise RuntimeError('bad config')\n")
    result = runner.invoke(app, ["serve", "cli_broken_app:app"])
    assert result.exit_code == 70
    assert "RuntimeError: bad config" in result.stderr
    assert "cli_broken_app.py" in result.stderr
    assert "line 2" in result.stderr


@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [
        ("app = 3\n", "cli_not_app:app", "is a int, not a Nexus instance"),
        ("x = 1\n", "cli_no_attr:app", "no attribute 'app'"),
        ("x = 1\n", "cli_no_app", "defines no Nexus instance"),
        (
            "from nexus import Nexus\na = Nexus()\nb = Nexus()\n",
            "cli_two_apps",
            "several Nexus instances (a, b)",
        ),
        ("x = 1\n", "cli_empty_attr:", "expected MODULE:APP"),
    ],
)
def test_an_app_reference_that_names_no_single_nexus_exits_2(
    app_dir: Path, source: str, spec: str, message: str
) -> None:
    (app_dir / f"{spec.partition(':')[0]}.py").write_text(source)
    result = runner.invoke(app, ["serve", spec])
    assert result.exit_code == 2
    assert message in result.stderr
