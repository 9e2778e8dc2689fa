"""`memory-layer up` starts again on the same port right after a stop, while the connections
of the gateway that just stopped still wait out TIME_WAIT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port

CLI = [sys.executable, "-m", "memory_layer_cli"]
READY_LINE = "Press Ctrl-C to stop"


def start_up(port: int, data_dir: Path) -> subprocess.Popen[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "MEMORY_", "CHAT_"))
    }
    return subprocess.Popen(
        [*CLI, "up", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    printed = []
    for line in process.stdout:
        printed.append(line)
        if READY_LINE in line:
            return
    process.wait(timeout=30)
    raise AssertionError(f"`up` exited with {process.returncode}:\n" + "".join(printed))


def stop(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    return process.wait(timeout=60)


@pytest.mark.slow
def test_up_starts_again_on_the_same_port_right_after_a_stop(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = start_up(port, tmp_path)
    try:
        wait_ready(first)
        token = subprocess.run(
            [*CLI, "token", "--user", "alice", "--data-dir", str(tmp_path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        # One client, so its connections stay open (kept alive) until the gateway stops and
        # closes them itself: the gateway's side of each one is left in TIME_WAIT.
        client = httpx.Client(base_url=url, timeout=30.0)
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        saved = client.post(
            "/save-prompt",
            json={"prompt": "I prefer window seats"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert saved.status_code == 200, saved.text
        assert stop(first) == 0
        client.close()
    finally:
        stop(first)

    second = start_up(port, tmp_path)
    try:
        wait_ready(second)
        assert httpx.get(f"{url}/healthz").status_code == 200
        memories = httpx.get(f"{url}/memories", headers={"Authorization": f"Bearer {token}"})
        assert [m["text"] for m in memories.json()["memories"]] == ["I prefer window seats"]
        assert stop(second) == 0
    finally:
        stop(second)
