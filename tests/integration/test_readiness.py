"""Readiness answers from the last backend probe: /ready costs no backend round trip per poll, and
a backend that stops answering turns it 503 within an interval (200 again once it is back).

Redis here is a private `redis-server` on a free loopback port, started and stopped by PID, so the
test can stop it and count the commands it received.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
import redis

from nexus import Nexus, RunningNexus

pytestmark = [pytest.mark.redis]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, on 127.0.0.1:`port`."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603  # the Debian redis-server, our own arguments
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until(lambda: self.client().ping() is True, what="the private Redis to answer")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def pings(self) -> int:
        """PING commands this server has answered."""
        with self.client() as client:
            stats = client.info("commandstats")
        return int(stats.get("cmdstat_ping", {}).get("calls", 0))


def _wait_until(check: Callable[[], bool], *, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except (OSError, redis.exceptions.RedisError):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def private_redis(redis_url: str) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server must be installed when CI=true (bash scripts/services)", pytrace=False)
        pytest.skip("no redis-server binary")
    server = PrivateRedis(binary, _free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[[str, float], RunningNexus]]:
    running: list[RunningNexus] = []

    def start(redis_url: str, interval_s: float) -> RunningNexus:
        app = Nexus(
            api_port=0,
            mcp_port=0,
            state_url=f"sqlite:///{tmp_path}/state.db",
            redis_url=redis_url,
            rate_limit=1000,
        )
        app.api.health_check_interval = interval_s
        running.append(app.start_in_thread())
        return running[-1]

    yield start
    for server in running:
        server.stop()


def test_polling_ready_costs_no_backend_round_trip_within_the_interval(
    private_redis: PrivateRedis, served: Callable[[str, float], RunningNexus]
) -> None:
    server = served(private_redis.url, 30)
    before = private_redis.pings()

    with httpx2.Client(base_url=server.api_url, timeout=10) as http:
        statuses = [http.get("/ready").status_code for _ in range(50)]

    assert statuses == [200] * 50
    assert private_redis.pings() == before


def test_ready_turns_503_within_an_interval_of_redis_stopping_and_200_once_it_is_back(
    private_redis: PrivateRedis, served: Callable[[str, float], RunningNexus]
) -> None:
    interval_s = 0.2
    server = served(private_redis.url, interval_s)
    with httpx2.Client(base_url=server.api_url, timeout=10) as http:
        assert http.get("/ready").status_code == 200

        private_redis.stop()
        stopped = time.monotonic()
        _wait_until(lambda: http.get("/ready").status_code == 503, what="/ready to turn 503", timeout_s=5)
        # Within the interval plus one refused connection attempt (immediate on loopback).
        assert time.monotonic() - stopped < interval_s + 1.0

        private_redis.start()
        _wait_until(lambda: http.get("/ready").status_code == 200, what="/ready to answer 200 again")
        detail = http.get("/health/detail").json()
        assert (detail["status"], detail["ready"]) == ("ok", True)
        assert "cluster" not in detail  # clustering is off
