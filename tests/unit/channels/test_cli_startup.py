"""`nexus --help` and friends start fast: they never load the server stack, the app or the HTTP client."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "mcp",
    "sqlalchemy",
    "httpx2",
    "rich",
    "nexus.app",
    "nexus.assembly",
)

PROBE = """
import json, sys
sys.argv = ["nexus", *json.loads(sys.argv[1])]
from nexus.console import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["run", "--help"],
        ["workflows", "list", "--help"],
        ["keys", "create", "--help"],
        ["serve", "--help"],
    ],
)
def test_help_loads_none_of_the_server_stack(args: list[str]) -> None:
    done = subprocess.run(  # noqa: S603  # our own interpreter and a fixed script
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Usage: nexus" in done.stdout
    modules = json.loads(done.stderr.strip().splitlines()[-1])
    loaded = sorted(m for m in modules if m in HEAVY or m.split(".")[0] in HEAVY)
    assert loaded == []
