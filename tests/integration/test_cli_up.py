"""`memory-layer up` starts again on the same port right after a stop, while the connections
of the gateway that just stopped still wait out TIME_WAIT; no service outlives it when it is
killed, and a data dir or port held by a leftover is named and taken over only on request,
never when another program holds it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from memory_layer_cli.stack import SUPERVISOR_VARIABLE
from service_kit.holders import DATA_DIR_LOCK, Holder, environment, port_holder, process
from tests.support.auth import HS_SECRET
from tests.support.ports import free_port
from tests.support.stack import ChatProcess, GatewayProcess, MemoryProcess

CLI = [sys.executable, "-m", "memory_layer_cli"]
READY_LINE = "Press Ctrl-C to stop"
# What docs/cli.md promises: once `up` is gone, its services are gone within this.
ORPHAN_BOUND_SECONDS = 5.0


def start_up(port: int, data_dir: Path, *flags: str) -> subprocess.Popen[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "MEMORY_", "CHAT_"))
    }
    return subprocess.Popen(
        [*CLI, "up", "--port", str(port), "--data-dir", str(data_dir), *flags],
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
        # The services of an `up` that still runs are never taken over, flag or not.
        message = refusal(free_port(), tmp_path, "--take-over")
        assert f"still running as pid {first.pid}: " in message
        assert f"{sys.executable} -m memory_service" in message
        assert client.get("/healthz").status_code == 200
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


def local_token(data_dir: Path, user: str) -> str:
    return subprocess.run(
        [*CLI, "token", "--user", user, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def services_of(supervisor_pid: int) -> list[Holder]:
    """The running processes `up` (pid supervisor_pid) started, by the mark it gives them."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            env = environment(int(entry.name))
            if env.get(SUPERVISOR_VARIABLE) == str(supervisor_pid):
                running = process(int(entry.name))
                if running is not None:
                    found.append(running)
    return found


def all_memories(url: str, token: str) -> list[dict[str, object]]:
    memories: list[dict[str, object]] = []
    cursor = None
    while True:
        params = {"page_size": 100, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(
            f"{url}/memories", params=params, headers={"Authorization": f"Bearer {token}"}
        ).json()
        memories.extend(page["memories"])
        cursor = page.get("next_cursor")
        if not cursor:
            return memories


class Load:
    """Saves and searches from a few threads until stopped; keeps the ids of acknowledged saves."""

    def __init__(self, url: str, token: str, threads: int = 3) -> None:
        self.url, self.token = url, token
        self.saved: list[str] = []
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def _run(self, worker: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10.0) as client:
            n = 0
            while not self.stopping.is_set():
                n += 1
                try:
                    if n % 2:
                        text = f"worker {worker} note {n}: the train leaves at {n % 24}:00"
                        saved = client.post("/save-prompt", json={"prompt": text})
                        if saved.status_code == 200:
                            self.saved.append(saved.json()["id"])
                    else:
                        client.post("/search", json={"query": "when does the train leave"})
                except httpx.HTTPError:
                    time.sleep(0.05)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)


@pytest.mark.slow
def test_no_service_outlives_a_killed_up_and_the_next_up_serves_what_was_saved(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = start_up(port, tmp_path)
    try:
        wait_ready(first)
        services = services_of(first.pid)
        assert sorted(service.argv[-1] for service in services) == [
            "chat_service",
            "gateway",
            "memory_service",
        ]
        token = local_token(tmp_path, "alice")
        with Load(url, token) as load:
            while len(load.saved) < 20:
                assert first.poll() is None
                time.sleep(0.1)
            # As the OOM killer or a closed session would: no chance to stop anything.
            first.kill()
            killed_at = time.monotonic()
            first.wait(10)
            while remaining := [s for s in services if process(s.pid) is not None]:
                elapsed = time.monotonic() - killed_at
                assert elapsed < ORPHAN_BOUND_SECONDS, (
                    f"still running after {elapsed:.1f} s: {remaining}"
                )
                time.sleep(0.05)
            gone_after = time.monotonic() - killed_at
        saved = list(load.saved)
        print(f"  services gone {gone_after:.2f} s after SIGKILL; {len(saved)} saves acknowledged")
    finally:
        stop(first)

    second = start_up(port, tmp_path)
    try:
        wait_ready(second)
        stored = {str(memory["id"]) for memory in all_memories(url, token)}
        assert len(saved) >= 20
        assert set(saved) <= stored
        assert stop(second) == 0
    finally:
        stop(second)


def refusal(port: int, data_dir: Path, *flags: str) -> str:
    """What `up` says when it gives up before starting anything (exit status 1), on one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "MEMORY_"))}
    refused = subprocess.run(
        [*CLI, "up", "--port", str(port), "--data-dir", str(data_dir), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1, refused.stderr
    return " ".join(refused.stderr.split())


def take_over(port: int, data_dir: Path, leftovers: list[int]) -> None:
    """`up --take-over` starts and serves, and none of the leftovers runs any more."""
    up = start_up(port, data_dir, "--take-over")
    try:
        wait_ready(up)
        assert [pid for pid in leftovers if process(pid) is not None] == []
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        assert stop(up) == 0
    finally:
        stop(up)


@pytest.mark.slow
def test_a_leftover_memory_service_is_named_and_taken_over_only_when_asked(
    tmp_path: Path,
) -> None:
    stray = MemoryProcess(tmp_path / "memory", MEMORY_EMBED_THREADS="1").start()
    port = free_port()
    try:
        message = refusal(port, tmp_path)
        assert f"pid {stray.pid}: {sys.executable} -m memory_service" in message
        assert "left by an earlier `memory-layer up`" in message
        assert "run again with --take-over" in message
        assert process(stray.pid) is not None

        take_over(port, tmp_path, [stray.pid])
    finally:
        stray.close()


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
"""


def test_a_data_dir_locked_by_another_program_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir(mode=0o700)
    lock = tmp_path / "memory" / DATA_DIR_LOCK
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "locked\n"
        for flags in ((), ("--take-over",)):
            message = refusal(free_port(), tmp_path, *flags)
            assert f"Data dir {tmp_path / 'memory'} is in use by pid {other.pid}: " in message
            assert "which is not a Memory Layer service; it is left alone" in message
            assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.slow
def test_a_port_held_by_a_leftover_gateway_is_taken_over_with_its_siblings(
    tmp_path: Path,
) -> None:
    # The `up` that started them is gone: its pid names no process any more.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mark = {SUPERVISOR_VARIABLE: str(gone.pid)}
    nowhere = f"127.0.0.1:{free_port()}"
    chat = ChatProcess(nowhere, **mark).spawn()
    gateway = GatewayProcess(
        nowhere, jwt_secret=HS_SECRET, issuer="leftover", chat_addr=chat.address, **mark
    ).spawn()
    try:
        deadline = time.monotonic() + 120
        while (holder := port_holder(gateway.port)) is None or holder.pid != gateway.pid:
            gateway.check()
            assert time.monotonic() < deadline
            time.sleep(0.2)

        message = refusal(gateway.port, tmp_path)
        assert f"Port {gateway.port} is in use by pid {gateway.pid}: " in message
        assert f"{sys.executable} -m gateway, left by an earlier `memory-layer up`" in message
        assert process(chat.pid) is not None

        # The gateway and chat_service of that `up`, found by the mark they share.
        take_over(gateway.port, tmp_path, [gateway.pid, chat.pid])
    finally:
        gateway.close()
        chat.close()
