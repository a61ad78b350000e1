"""The REST floor: a bare Starlette app doing the work of the `add` workflow in one route.

Run as `python -m bench.floor --port P`; served by uvicorn with uvloop and httptools, like Nexus.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def add(request: Request) -> JSONResponse:
    """Parse {"inputs": {"a", "b"}}, add, answer {"outputs": {"add": {"result": a + b}}}."""
    body = await request.json()
    inputs = body["inputs"]
    return JSONResponse({"outputs": {"add": {"result": inputs["a"] + inputs["b"]}}})


app = Starlette(routes=[Route("/workflows/add/execute", add, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--port", type=int, required=True)
    port: int = parser.parse_args().port
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
