"""The console every command, and the supervisor `up` becomes, talks on."""

from __future__ import annotations

from rich.console import Console

# No wrapping: the printed commands must stay copy-pasteable.
console = Console(stderr=True, soft_wrap=True)
