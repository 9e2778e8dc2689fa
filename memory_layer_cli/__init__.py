"""The `memory-layer` command line, an HTTP client of the gateway that no server imports:
commands in commands.py (import and export in transfer.py), the local stack's process
supervisor in stack.py, local-mode signing secret in local_auth.py, the stdio MCP bridge in
mcp_bridge.py, and export parsing and uploading in importing/."""

from memory_layer_cli.commands import app, main

__all__ = ["app", "main"]
