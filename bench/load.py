"""HTTP load from `wrk` in its own process: a Lua script for the POST, parsed text output.

Every run is bounded: wrk's own `-d` plus a hard subprocess timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

THREADS = 2
CONNECTIONS = 8
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_P99 = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s+(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"^\s+Non-2xx or 3xx responses:\s+(\d+)", re.MULTILINE)
_SOCKET = re.compile(
    r"^\s+Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)


class WrkOutputError(ValueError):
    """wrk printed something this parser does not recognise."""


@dataclass(frozen=True, slots=True)
class Load:
    """One wrk run's figures."""

    requests_per_s: float
    p99_ms: float
    requests: int
    bad_status: int
    """Responses outside 2xx/3xx: the server refused or failed work, so the rate is not comparable."""
    socket_errors: int


def parse_wrk(text: str) -> Load:
    """Read requests/s, p99 (from `--latency`) and error counts out of wrk's report."""
    rate, p99, total = _RATE.search(text), _P99.search(text), _TOTAL.search(text)
    if rate is None or p99 is None or total is None:
        raise WrkOutputError(f"unrecognised wrk output: {text.strip()[-300:]!r}")
    non_2xx = _NON_2XX.search(text)
    sockets = _SOCKET.search(text)
    return Load(
        requests_per_s=float(rate.group(1)),
        p99_ms=float(p99.group(1)) * _UNIT_MS[p99.group(2)],
        requests=int(total.group(1)),
        bad_status=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


def lua_script(body: str, headers: Mapping[str, str]) -> str:
    """A wrk script sending `body` as a POST with `headers` on every request."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def _lua_string(text: str) -> str:
    """A double-quoted Lua literal: quote and backslash escaped, bytes outside printable ASCII as \\ddd."""
    return '"' + "".join(_lua_char(c) for c in text) + '"'


def _lua_char(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if " " <= char <= "~":
        return char
    return "".join(f"\\{byte:03d}" for byte in char.encode())


def find_wrk() -> str:
    """The wrk binary; installed with apt-get when missing and running as root."""
    path = shutil.which("wrk")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        if not _apt_get("install", "-y", "-q", "wrk"):
            _apt_get("update", "-q")
            _apt_get("install", "-y", "-q", "wrk")
        path = shutil.which("wrk")
    if path is None:
        raise FileNotFoundError(
            "wrk is not installed; install it with `apt-get install wrk` (Debian/Ubuntu)."
        )
    return path


def _apt_get(*args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )
    return done.returncode == 0


def run_wrk(wrk: str, url: str, script: Path, duration_s: float) -> Load:
    """Drive `url` with `-t2 -c8` for `duration_s` seconds; the process is killed if it overruns."""
    seconds = max(1, round(duration_s))
    cmd = [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise WrkOutputError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-300:]}")
    return parse_wrk(done.stdout)
