"""Keep-alive responses must not wait out Nagle's algorithm against the client's delayed ACK."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from nexus import Nexus
from nexus.workflow import WorkflowBuilder

_REQUEST = (
    b"POST /workflows/add/execute HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b'Content-Length: 24\r\n\r\n{"inputs":{"a":1,"b":2}}'
)


async def test_second_request_on_a_kept_alive_connection_answers_without_a_delayed_ack_stall(
    tmp_path: Path,
) -> None:
    app = Nexus(api_port=0, mcp_port=0, state_url=f"sqlite:///{tmp_path}/state.db")
    builder = WorkflowBuilder().add_input("a", int).add_input("b", int)
    app.register("add", builder.add_node("PythonCodeNode", "add", {"code": "result = a + b"}).build())
    # serving() runs on this test's plain asyncio loop, where TCP_NODELAY depends on the socket.
    async with app.serving() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.api_port)
        timings = []
        for _ in range(4):
            started = time.perf_counter()
            writer.write(_REQUEST)
            answer = b""
            while b'"duration_ms"' not in answer:
                answer += await asyncio.wait_for(reader.read(65536), timeout=5)
            timings.append(time.perf_counter() - started)
        writer.close()
        await writer.wait_closed()
    assert b'"result":3' in answer
    # A Nagle stall costs about 40 ms per response; a healthy answer takes a few.
    assert max(timings[1:]) < 0.03, timings
