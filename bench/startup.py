"""Start-up wall times: fresh processes, one untimed run first, then the median of several."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

RUNS = 5


def import_command() -> list[str]:
    return [sys.executable, "-c", "import nexus"]


def help_command() -> list[str]:
    # The console script beside this interpreter: the one `make` installs into .venv/bin.
    return [str(Path(sys.executable).parent / "nexus"), "--help"]


def median_wall_s(cmd: Sequence[str], runs: int = RUNS, timeout_s: float = 30.0) -> float:
    """Median wall time of `cmd` over `runs` fresh processes; raises if any run fails."""
    _run_once(cmd, timeout_s)  # untimed: fills the page cache, so every timed run starts alike
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        _run_once(cmd, timeout_s)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _run_once(cmd: Sequence[str], timeout_s: float) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"`{' '.join(cmd)}` exited with {done.returncode}: {tail[0]}")
