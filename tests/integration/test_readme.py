"""Every code example in the README runs as written, in order, against a server it starts.

Ports are the only thing changed: 8000 and 3000 in the examples become free ports, `nexus serve`
gets the matching --api-port/--mcp-port, and the CLI the matching NEXUS_URL. `make test` is the
command running this suite, so the `setup` block's second line is exercised by CI rather than
here; `make demo` is run below.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass
class Block:
    lang: str
    tags: tuple[str, ...]
    text: str
    expected: str | None = None

    def tag(self, prefix: str) -> str | None:
        return next((t.split("=", 1)[1] for t in self.tags if t.startswith(prefix + "=")), None)


def readme_blocks() -> list[Block]:
    blocks: list[Block] = []
    for info, text in _FENCE.findall((ROOT / "README.md").read_text()):
        lang, *tags = info.split() or [""]
        if lang == "text" and "output" in tags:
            blocks[-1].expected = text
        else:
            blocks.append(Block(lang, tuple(tags), text))
    return blocks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Site:
    directory: Path
    api: int
    mcp: int

    def localize(self, text: str) -> str:
        return text.replace("8000", str(self.api)).replace("3000", str(self.mcp))

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "NEXUS_URL": f"http://127.0.0.1:{self.api}",
            "PYTHONPATH": str(self.directory),
        }


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path, free_port(), free_port())


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def _run(block: Block, site: Site) -> str:
    code = site.localize(block.text)
    # A shell block runs as a reader pastes it: its status is its last command's.
    command = [sys.executable, "-c", code] if block.lang == "python" else ["/bin/bash", "-c", code]
    done = subprocess.run(  # noqa: S603  # the README's own examples, by design
        command,
        cwd=site.directory,
        env=site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{code}\n--- output\n{done.stdout}"
    return done.stdout


def _check_output(block: Block, output: str) -> None:
    if block.expected is None:
        return
    for line in block.expected.splitlines():
        assert line.strip() in output, f"expected {line.strip()!r} in the output of:\n{block.text}\n{output}"


def test_every_readme_example_runs_as_written(site: Site) -> None:
    blocks = readme_blocks()
    assert any(b.tag("file") == "quickstart.py" for b in blocks)
    server: subprocess.Popen[bytes] | None = None
    try:
        for block in blocks:
            if block.lang not in ("python", "sh") or "setup" in block.tags:
                continue
            name = block.tag("file")
            if name is not None:
                (site.directory / name).write_text(site.localize(block.text))
            elif "serve" in block.tags:
                # The app keeps its default ports; the serve command moves them to free ones.
                command = f"exec {block.text.strip()} --api-port {site.api} --mcp-port {site.mcp}"
                server = subprocess.Popen(  # noqa: S603
                    ["/bin/bash", "-c", command],
                    cwd=site.directory,
                    env=site.env,
                    start_new_session=True,
                )
                _wait_healthy(f"http://127.0.0.1:{site.api}/health", server)
            else:
                _check_output(block, _run(block, site))
    finally:
        if server is not None:
            _stop(server)


def test_make_demo_serves_the_demo_workflows(site: Site) -> None:
    setup = next(b for b in readme_blocks() if "setup" in b.tags)
    assert setup.text.splitlines()[0].startswith("make demo")
    env = {**site.env, "NEXUS_STATE_URL": f"sqlite:///{site.directory}/demo.db"}
    args = f"DEMO_ARGS=--api-port {site.api} --mcp-port {site.mcp}"
    make = shutil.which("make") or "make"
    demo = subprocess.Popen([make, "-s", "demo", args], cwd=ROOT, env=env, start_new_session=True)  # noqa: S603
    try:
        _wait_healthy(f"http://127.0.0.1:{site.api}/health", demo)
        answer = httpx2.post(
            f"http://127.0.0.1:{site.api}/workflows/stats/execute", json={"inputs": {"values": [1, 2, 6]}}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"]["mean"] == {"result": 3.0}
    finally:
        _stop(demo)
