"""Server processes under test: start one on free loopback ports, wait for it, stop it by PID.

A server that does not come up in time, or outlives its stop signal, is killed; a server whose
harness dies is killed by the kernel (parent-death signal), so a run never leaves one behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


class HarnessError(Exception):
    """The harness could not run a measurement (as opposed to a target being missed)."""


def free_port() -> int:
    """A loopback port free right now (the server binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGTERM it if the harness dies.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _is_serving(port: int) -> bool:
    # Any HTTP answer counts; an open port alone does not, since Nexus binds before it can serve.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Server:
    """A running server process and the ports it answers on."""

    proc: subprocess.Popen[bytes]
    ports: tuple[int, ...]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mib(self) -> float:
        """Resident set size now of the server and every process it started (its audit appender,
        for one), from /proc/<pid>/status (VmRSS is in KiB)."""
        return sum(_rss_kib(pid) for pid in _self_and_descendants(self.pid)) / 1024

    def last_log_line(self) -> str:
        """The server's last line of output: after a crash, the exception."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else "(no output)"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise HarnessError(f"/proc/{pid}/status has no VmRSS line")


def _self_and_descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            found.extend(_self_and_descendants(int(child)))
    return found


def _wait_ready(server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(server.ports)
    while pending:
        if server.proc.poll() is not None:
            raise HarnessError(f"exited with code {server.proc.returncode}: {server.last_log_line()}")
        if time.monotonic() > deadline:
            raise HarnessError(
                f"port {pending[0]} did not answer HTTP within {timeout_s:.0f} s: {server.last_log_line()}"
            )
        if _is_serving(pending[0]):
            pending.pop(0)
        else:
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM this PID, wait a bounded time, then SIGKILL it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(timeout_s)


@contextlib.contextmanager
def running(
    module: str, args: Sequence[str], ports: Sequence[int], log: Path, *, ready_timeout_s: float = 30.0
) -> Iterator[Server]:
    """Run `python -m module args` until the block ends; yields once every port answers HTTP."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            # preexec_fn is unsafe with threads; the harness has none.
            preexec_fn=_die_with_parent,
        )
    try:
        server = Server(proc, tuple(ports), log)
        _wait_ready(server, ready_timeout_s)
        yield server
    finally:
        stop(proc)
