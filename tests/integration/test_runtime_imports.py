"""The services run without torch: starting memory_service (model loaded, store open) and
importing every runtime package loads none of torch, transformers or sentence-transformers,
which are development dependencies only, nor, with the embedded store, the Qdrant client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FORBIDDEN = ("torch", "transformers", "sentence_transformers")

SCRIPT = """
import asyncio, json, sys

import chat_service.server, gateway.app, memory_layer_cli, service_kit.grpc_server
from memory_service.config import MemorySettings
from memory_service.server import create_server


async def main():
    settings = MemorySettings(
        host="127.0.0.1", port=0, metrics_port=-1, data_dir=sys.argv[1], service_token="t"
    )
    server = await create_server(settings)
    await server.start_serving()
    vector = await server.embedder.embed("a first memory")
    await server.stop(0)
    return len(vector)


dimension = asyncio.run(main())
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"dimension": dimension, "loaded": loaded}))
"""


def test_starting_memory_service_imports_no_torch(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["dimension"] == 384
    assert "onnxruntime" in report["loaded"]
    assert [name for name in FORBIDDEN if name in report["loaded"]] == []
    assert "qdrant_edge" in report["loaded"]
    assert "qdrant_client" not in report["loaded"]
