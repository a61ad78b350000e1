"""The measurements: start each server in turn, check one answer, read RSS, then time it with wrk.

Servers run one at a time, so no two compete for the CPU; each is stopped before the next starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench import check, startup
from bench.load import WrkOutputError, lua_script, run_wrk
from bench.nexus_server import BENCH_PASSWORD, BENCH_USER, TENANT, TENANT_HOST, Profile
from bench.process import HarnessError, Server, free_port, running
from bench.report import Measurement

# Failures that make one row unmeasurable without stopping the run.
ROW_ERRORS = (
    HarnessError,
    check.WrongAnswerError,
    WrkOutputError,
    OSError,
    RuntimeError,
    subprocess.TimeoutExpired,
)
IDLE_REQUESTS = 20


@dataclass(frozen=True, slots=True)
class NexusRows:
    """The keys of the rows one Nexus server process gives: REST, then MCP or the session token."""

    rss: str
    rest: str
    second: str


ROWS = {
    Profile.DEFAULTS: NexusRows("rss_defaults", "nexus_defaults", "nexus_mcp"),
    Profile.AUTH: NexusRows("rss_auth", "nexus_auth", "nexus_auth_session"),
    Profile.FULL: NexusRows("rss_full", "nexus_full", "nexus_session"),
}


@dataclass(frozen=True, slots=True)
class Run:
    """Settings shared by every measurement of one harness run."""

    wrk: str
    workdir: Path
    duration_s: float
    warmup_s: float

    def load(self, name: str, port: int, path: str, body: str, headers: Mapping[str, str]) -> Measurement:
        """Warm up, then time `wrk -t2 -c8`; any non-2xx or socket error voids the figure."""
        script = self.workdir / f"{name}.lua"
        script.write_text(lua_script(body, headers))
        url = f"http://127.0.0.1:{port}{path}"
        run_wrk(self.wrk, url, script, self.warmup_s)
        load = run_wrk(self.wrk, url, script, self.duration_s)
        if load.bad_status or load.socket_errors:
            return Measurement(
                error=f"{load.bad_status} non-2xx responses and {load.socket_errors} socket errors "
                f"in {load.requests} requests ({load.requests_per_s:,.0f} req/s)"
            )
        return Measurement(load.requests_per_s, load.p99_ms)


def attempt(measure: Callable[[], Measurement]) -> Measurement:
    """Run one measurement; a failure becomes the row's reason instead of ending the run."""
    try:
        return measure()
    except ROW_ERRORS as exc:
        return Measurement(error=f"{type(exc).__name__}: {exc}")


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _rest(run: Run, name: str, port: int, headers: Mapping[str, str]) -> Measurement:
    check.check_rest(*check.post(port, check.REST_PATH, check.REST_BODY, headers))
    return run.load(name, port, check.REST_PATH, check.REST_BODY, headers)


def _mcp(run: Run, name: str, port: int) -> Measurement:
    check.check_mcp(*check.post(port, check.MCP_PATH, check.MCP_BODY, check.MCP_HEADERS))
    return run.load(name, port, check.MCP_PATH, check.MCP_BODY, check.MCP_HEADERS)


def measure_floor(run: Run, key: str = "floor") -> dict[str, Measurement]:
    """The REST floor as row `key`: measured again right before each Nexus server's rows, so a
    ratio compares two figures taken a few seconds apart, not minutes (a shared machine drifts)."""
    progress(f"floor: bare Starlette ({key})")
    port = free_port()
    with running("bench.floor", ["--port", str(port)], [port], run.workdir / f"{key}.log"):
        headers = {"Content-Type": "application/json"}
        return {key: attempt(lambda: _rest(run, key, port, headers))}


def measure_mcp_floor(run: Run) -> dict[str, Measurement]:
    progress("mcp floor: bare SDK server")
    port = free_port()
    with running("bench.mcp_floor", ["--port", str(port)], [port], run.workdir / "mcp_floor.log"):
        return {"mcp_floor": attempt(lambda: _mcp(run, "mcp_floor", port))}


def _idle_rss(server: Server, port: int, headers: Mapping[str, str]) -> Measurement:
    for _ in range(IDLE_REQUESTS):
        check.check_rest(*check.post(port, check.REST_PATH, check.REST_BODY, headers))
    return Measurement(server.rss_mib())


def measure_nexus(run: Run, *, profile: Profile) -> dict[str, Measurement]:
    """From one server process: Nexus defaults (REST, MCP, RSS), or auth on / the full pipeline
    (REST with the API key and with a session token, RSS) after checking they decide."""
    kind = profile.value
    progress(f"nexus {kind}")
    state = run.workdir / f"nexus_{kind}"
    state.mkdir()
    api, mcp = free_port(), free_port()
    args = ["--api-port", str(api), "--mcp-port", str(mcp), "--state-dir", str(state), "--profile", kind]
    keys = ROWS[profile]
    with running("bench.nexus_server", args, [api, mcp], run.workdir / f"nexus_{kind}.log") as server:
        headers = {"Content-Type": "application/json"}
        if profile is not Profile.DEFAULTS:
            headers = _checked_credentials(api, state, profile, headers)
        rows = {keys.rss: attempt(lambda: _idle_rss(server, api, headers))}
        rows[keys.rest] = attempt(lambda: _rest(run, keys.rest, api, headers))
        if profile is Profile.DEFAULTS:
            rows[keys.second] = attempt(lambda: _mcp(run, keys.second, mcp))
        else:
            session = {**headers, "Authorization": f"Bearer {_login(api, headers.get('Host'))}"}
            rows[keys.second] = attempt(lambda: _rest(run, keys.second, api, session))
        return rows


def _checked_credentials(port: int, state: Path, profile: Profile, base: Mapping[str, str]) -> dict[str, str]:
    """`base` with the bench key, and on the full rows the tenant's Host (wrk sends it too), once
    checked that the rows time what they say: RBAC+ABAC deciding, and on the full rows tenancy
    deciding and counting too."""
    headers = {**base, "Authorization": f"Bearer {(state / 'api_key').read_text().strip()}"}
    if profile is Profile.FULL:
        headers["Host"] = TENANT_HOST
        ops = {"Authorization": f"Bearer {(state / 'ops_key').read_text().strip()}"}
        _check_tenancy_on(port, headers, ops)
    _check_authorization_on(port, headers)
    return headers


def _check_tenancy_on(port: int, headers: Mapping[str, str], ops: Mapping[str, str]) -> None:
    """The full rows time tenancy: off the tenant's host the key must reach nothing, and one call
    on it must count against the tenant's quotas (read from /metrics with the platform's key)."""
    off_route = {k: v for k, v in headers.items() if k.lower() != "host"}
    check.check_tenant_refused(*check.post(port, check.REST_PATH, check.REST_BODY, off_route))
    before = _tenant_usage(port, ops)
    check.check_rest(*check.post(port, check.REST_PATH, check.REST_BODY, headers))
    check.check_quota_counted(before, _tenant_usage(port, ops))


def _tenant_usage(port: int, ops: Mapping[str, str]) -> dict[str, float]:
    status, text = check.get(port, check.METRICS_PATH, ops)
    if status != 200:
        raise check.WrongAnswerError(f"metrics: HTTP {status}: {text[:200]}")
    return check.tenant_usage(text, TENANT)


def _check_authorization_on(port: int, headers: Mapping[str, str]) -> None:
    """The auth and full rows time RBAC+ABAC: a workflow no role of the key may run must be refused."""
    check.check_authorization_refused(
        *check.post(port, "/workflows/sealed/execute", check.REST_BODY, headers)
    )


def _login(port: int, host: str | None) -> str:
    """Log in as the bench user on `host`'s route (None: the platform's); the API channel token of
    the new session (a session made on a tenant's route is that tenant's, and serves there only)."""
    body = json.dumps({"username": BENCH_USER, "password": BENCH_PASSWORD})
    headers = {"Content-Type": "application/json", **({} if host is None else {"Host": host})}
    status, text = check.post(port, "/auth/login", body, headers)
    if status != 200:
        raise check.WrongAnswerError(f"login: HTTP {status}: {text[:200]}")
    token: str = json.loads(text)["access_token"]
    return token


def measure_nexus_safely(run: Run, *, profile: Profile) -> dict[str, Measurement]:
    """As `measure_nexus`, but a server that never comes up fails its rows instead of the run."""
    try:
        return measure_nexus(run, profile=profile)
    except ROW_ERRORS as exc:
        failed = Measurement(error=f"the Nexus server did not serve: {exc}")
        keys = ROWS[profile]
        return dict.fromkeys((keys.rest, keys.second, keys.rss), failed)


def measure_startup() -> dict[str, Measurement]:
    progress("start-up times")
    return {
        "import_nexus": attempt(lambda: Measurement(startup.median_wall_s(startup.import_command()))),
        "nexus_help": attempt(lambda: Measurement(startup.median_wall_s(startup.help_command()))),
    }
