"""The `memory-layer` command line, an HTTP client of the gateway that no server imports:
commands in commands.py (import and export in transfer.py), the process `up` becomes to
supervise the local stack in supervisor.py and stack.py, local-mode signing secret in
local_auth.py, the stdio MCP bridge in mcp_bridge.py, and export parsing and uploading in
importing/.

Importing the package loads none of the commands: the supervisor, run as a module of it,
stays free of the parser."""

from __future__ import annotations


def main() -> None:
    from memory_layer_cli.commands import main as run_command

    run_command()
