"""The demo app behind `make demo`: three small workflows on the embedded SQLite default.

Serve it with `nexus serve examples.demo:app`; REST on 127.0.0.1:8000, MCP on 127.0.0.1:3000/mcp.
"""

import os

from nexus import Nexus
from nexus.workflow.builder import WorkflowBuilder

# The state file is ./nexus.db unless NEXUS_STATE_URL names another store.
app = Nexus(state_url=os.environ.get("NEXUS_STATE_URL", "sqlite:///./nexus.db"))

add = WorkflowBuilder()
add.add_input("a", int, description="First addend")
add.add_input("b", int, description="Second addend")
add.add_node("PythonCodeNode", "add", {"code": "result = a + b"})
app.register("add", add.build(), description="Add two integers", tags=["math"])

greet = WorkflowBuilder()
greet.add_input("name", str, description="Who to greet")
greet.add_input("excited", bool, required=False, default=False)
greet.add_node(
    "PythonCodeNode",
    "greet",
    {"code": "result = f'Hello, {name}' + ('!' if excited else '.')"},
)
app.register("greet", greet.build(), description="Greet someone", tags=["text"])

# Two independent branches run concurrently, then a third node joins them.
stats = WorkflowBuilder()
stats.add_input("values", {"type": "array", "items": {"type": "number"}, "minItems": 1})
stats.add_node("PythonCodeNode", "total", {"code": "result = sum(values)"})
stats.add_node("PythonCodeNode", "count", {"code": "result = len(values)"})
stats.add_node("PythonCodeNode", "mean", {"code": "result = total / count"})
stats.add_connection("total", "result", "mean", "total")
stats.add_connection("count", "result", "mean", "count")
app.register("stats", stats.build(), description="Sum, count and mean of numbers", tags=["math"])

if __name__ == "__main__":
    app.start()
