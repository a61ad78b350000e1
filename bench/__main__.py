"""`python -m bench` (what `make bench` runs): measure every row once, print one table, save JSON.

Exits 0 when the table was produced, whatever the verdicts; non-zero only when the harness itself
could not run (no wrk, or a floor that cannot be measured, so no ratio means anything).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import shlex
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bench import measure, report
from bench.load import CONNECTIONS, THREADS, find_wrk
from bench.nexus_server import Profile
from bench.process import REPO_ROOT

DEFAULT_OUTPUT = REPO_ROOT / "bench" / "results" / "latest.json"
# The floor row each Nexus server's REST rows are ratios to, measured right before that server.
FLOORS = (("floor", Profile.DEFAULTS), ("floor_auth", Profile.AUTH), ("floor_full", Profile.FULL))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of each timed wrk run (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of untimed load before each (default 2)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON report")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 600 or not 1 <= args.warmup <= 60:
        parser.error("--duration must be 1..600 seconds and --warmup 1..60 seconds")
    return args


def _command(argv: list[str]) -> str:
    python = Path(sys.executable)
    # Outside the working directory the absolute path is the exact command.
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    return shlex.join([str(python), "-m", "bench", *argv])


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through every `finally`, so each server is stopped by its PID.
    raise SystemExit(128 + signum)


def collect(run: measure.Run) -> tuple[dict[str, report.Measurement], list[str]]:
    """Measure every row; returns the measurements and the harness failures (floors that failed)."""
    measured: dict[str, report.Measurement] = {}
    failures: list[str] = []

    def floor(key: str, measure_floor: Callable[[], dict[str, report.Measurement]]) -> None:
        try:
            measured.update(measure_floor())
        except measure.ROW_ERRORS as exc:
            measured[key] = report.Measurement(error=f"{type(exc).__name__}: {exc}")
        if measured[key].value is None:
            failures.append(f"{key}: {measured[key].error}")

    floor("mcp_floor", functools.partial(measure.measure_mcp_floor, run))
    # Each Nexus server's REST rows are ratios to a floor measured just before them.
    for key, profile in FLOORS:
        floor(key, functools.partial(measure.measure_floor, run, key))
        measured.update(measure.measure_nexus_safely(run, profile=profile))
    measured.update(measure.measure_startup())
    return measured, failures


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    command = _command(argv)
    print(f"$ {command}", flush=True)
    try:
        wrk = find_wrk()
    except FileNotFoundError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    meta = {
        "command": command,
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load": f"wrk -t{THREADS} -c{CONNECTIONS} -d{round(args.duration)}s --latency "
        f"after {args.warmup:g} s warm-up",
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}",
    }
    with tempfile.TemporaryDirectory(prefix="nexus-bench-") as workdir:
        run = measure.Run(wrk, Path(workdir), args.duration, args.warmup)
        measured, failures = collect(run)
    lines = report.evaluate(report.SPECS, measured)
    notes = [
        report.AUTH_ON_NOTE,
        report.FULL_PIPELINE_NOTE,
        "one server process each, uvicorn + uvloop + httptools, 127.0.0.1",
    ]
    print(f"{meta['started_at']}  {meta['load']}  ({meta['machine']})")
    print(report.render(lines, notes), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report.as_json(lines, {**meta, "notes": notes}), indent=2) + "\n")
    print(f"JSON: {args.output}")
    for failure in failures:
        print(f"bench: the harness could not measure a floor, so ratios are void: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
