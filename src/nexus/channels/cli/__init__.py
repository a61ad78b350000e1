"""The CLI channel: the `nexus` console script (client) and its `/cli/v1` routes (server).

Importing this package must stay cheap: `main` loads only typer; each command imports what it needs.
"""
