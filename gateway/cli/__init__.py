"""The `memory-layer` command line: commands in commands.py, the local stack's process
supervisor in stack.py, local-mode signing secret in local_auth.py, `extension` in extension.py."""

from gateway.cli import extension as _extension  # noqa: F401  (registers `memory-layer extension`)
from gateway.cli.commands import app, main

__all__ = ["app", "main"]
