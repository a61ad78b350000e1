"""Nexus under test: one `add` workflow, served by `app.start()` in this process.

Run as `python -m bench.nexus_server --api-port P --mcp-port Q --state-dir D [--full]`. With
`--full`, auth, a never-reached rate limit and monitoring are on, and the API key is written to
D/api_key before the ports open (the harness waits for the ports, then reads it); the user
`bench` exists too, for the harness to log in as (the session-token row).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from nexus import Nexus
from nexus.workflow import WorkflowBuilder

# A rate limit per minute far above what one process can serve, so the limiter runs but never denies.
UNREACHED_RATE_LIMIT = 10_000_000
# The user the harness logs in as, for the session-token row (a channel token from a login session).
BENCH_USER = "bench"
BENCH_PASSWORD = "bench-password-not-secret"  # noqa: S105  # a throwaway bench account


def build_app(api_port: int, mcp_port: int, state_dir: Path, *, full: bool) -> Nexus:
    """Build the app and register `add`; with `full`, mint the bench API key into state_dir/api_key."""
    state_url = f"sqlite:///{state_dir / 'bench.db'}"
    if full:
        app = Nexus(
            api_port=api_port,
            mcp_port=mcp_port,
            state_url=state_url,
            enable_auth=True,
            rate_limit=UNREACHED_RATE_LIMIT,
            enable_monitoring=True,
        )
    else:
        app = Nexus(api_port=api_port, mcp_port=mcp_port, state_url=state_url)
    builder = WorkflowBuilder()
    builder.add_node("PythonCodeNode", "add", {"code": "result = a + b"})
    builder.add_input("a", int)
    builder.add_input("b", int)
    app.register("add", builder.build(), description="Add two integers.")
    if full:
        # Long enough that no token expires during a run; the harness logs in once.
        app.auth.access_token_duration = 3600
        issued = asyncio.run(app.create_api_key("bench"))
        asyncio.run(app.create_user(BENCH_USER, BENCH_PASSWORD, roles=["bench"]))
        (state_dir / "api_key").write_text(issued.plaintext)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.nexus_server")
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--mcp-port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument(
        "--full", action="store_true", help="auth + rate limit + monitoring (audit is always on)"
    )
    args = parser.parse_args()
    app = build_app(args.api_port, args.mcp_port, args.state_dir, full=args.full)
    app.start()


if __name__ == "__main__":
    main()
