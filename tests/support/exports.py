"""Synthetic chat exports for import tests, and running the `memory-layer` CLI as its own
process against a gateway on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def chatgpt_export(path: Path, conversations: int, exchanges: int) -> list[str]:
    """Write a ChatGPT conversations.json; returns every message id, prompts and answers.
    Message n of the export was written n minutes after START."""
    items = []
    ids: list[str] = []
    minute = 0
    for c in range(conversations):
        mapping: dict[str, object] = {"root": {"id": "root", "message": None, "parent": None}}
        parent = "root"
        for e in range(exchanges):
            for role, text in (
                ("user", f"Conversation {c} question {e}: how do I tune a bicycle gear?"),
                ("assistant", f"Answer {e} in conversation {c}: turn the barrel adjuster."),
            ):
                node = f"c{c}-e{e}-{role}"
                created = (START + timedelta(minutes=minute)).timestamp()
                minute += 1
                mapping[node] = {
                    "id": node,
                    "parent": parent,
                    "children": [],
                    "message": {
                        "id": node,
                        "author": {"role": role},
                        "create_time": created,
                        "content": {"content_type": "text", "parts": [text]},
                    },
                }
                parent = node
                ids.append(node)
        items.append(
            {"id": f"conv-{c}", "title": f"Gears {c}", "current_node": parent, "mapping": mapping}
        )
    path.write_text(json.dumps(items))
    return ids


async def run_cli(*args: str, timeout: float = 240.0) -> tuple[int, str]:
    """Run `memory-layer ARGS` to completion; its exit code and combined output."""
    process = await start_cli(*args)
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, out.decode()


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "memory_layer_cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
