"""The MCP floor: a bare `mcp` SDK low-level server exposing one `add` tool over streamable HTTP.

Stateless with JSON responses, the transport settings Nexus uses. Run as
`python -m bench.mcp_floor --port P`; the endpoint is http://127.0.0.1:P/mcp.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server import Server, ServerRequestContext

ADD_TOOL = types.Tool(
    name="add",
    description="Add two integers.",
    input_schema={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)


async def list_tools(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[ADD_TOOL])


async def call_tool(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    """Answer the sum as structured content and as its JSON text, as a tool result should."""
    if params.name != "add":
        return types.CallToolResult(
            content=[types.TextContent(text=f"unknown tool {params.name}")], is_error=True
        )
    arguments = params.arguments or {}
    outputs = {"add": {"result": arguments["a"] + arguments["b"]}}
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(outputs))], structured_content=outputs
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mcp_floor")
    parser.add_argument("--port", type=int, required=True)
    port: int = parser.parse_args().port
    server: Server[Any] = Server(
        "bench-floor",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        # As the SDK's high-level server does: a tool's schema without a tools/list round trip.
        get_tool_input_schema=lambda name: ADD_TOOL.input_schema if name == ADD_TOOL.name else None,
    )
    app = server.streamable_http_app(json_response=True, stateless_http=True, host="127.0.0.1")
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
