"""memory_service killed with SIGKILL at random moments under concurrent saves through the
gateway, and restarted on the same data dir: every acknowledged save survives, none twice."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.reliability import client_for, export_all, gateway_settings, memory_process
from tests.support.stack import GatewayServer, LoopThread

CLIENTS = 16
MIN_SAVES_PER_CLIENT = 5
USERS = 4
KILLS = 3


class Client(threading.Thread):
    """Saves messages in order until `finish` is set; a save that fails with 5xx or no answer
    is sent again with the same message id until the gateway acknowledges it."""

    def __init__(
        self, url: str, number: int, finish: threading.Event, stop: threading.Event
    ) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.number = number
        self.user = f"crash-user-{number % USERS}"
        self.finish = finish
        self.stop_event = stop
        self.sent = 0
        self.acknowledged: dict[str, str] = {}
        self.retries = 0
        self.unexpected: list[str] = []

    def run(self) -> None:
        try:
            self._save_all()
        except Exception as exc:
            self.unexpected.append(repr(exc))

    def _save_all(self) -> None:
        with client_for(self.url, self.user, timeout=30.0) as client:
            n = 0
            while n < MIN_SAVES_PER_CLIENT or not self.finish.is_set():
                n += 1
                self.sent = n
                message_id = f"client-{self.number}-msg-{n}"
                body = {"prompt": f"note {n} from client {self.number}", "message_id": message_id}
                while not self.stop_event.is_set():
                    try:
                        response = client.post("/save-prompt", json=body)
                    except httpx.TransportError:
                        response = None
                    if response is not None and response.status_code == 200:
                        self.acknowledged[message_id] = response.json()["id"]
                        # Paced like people typing, so the machine is not saturated.
                        time.sleep(0.05)
                        break
                    if response is not None and response.status_code < 500:
                        self.unexpected.append(f"{response.status_code} {response.text}")
                        return
                    self.retries += 1
                    time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_acknowledged_saves_survive_sigkill_and_none_is_stored_twice(
    tmp_path: Path,
) -> None:
    rng = random.Random()
    memory = memory_process(tmp_path / "memory").start()
    loop = LoopThread()
    gateway = GatewayServer(loop, gateway_settings(memory.port, grpc_timeout_seconds=10.0)).start()
    stop, finish = threading.Event(), threading.Event()
    clients = [Client(gateway.url, i, finish, stop) for i in range(CLIENTS)]
    kills = 0
    try:
        for client in clients:
            client.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 3.0))
            memory.kill()
            kills += 1
            memory.start()
        time.sleep(1.0)
        finish.set()
        deadline = time.monotonic() + 240
        for client in clients:
            client.join(max(0.0, deadline - time.monotonic()))
        stop.set()
        assert not any(client.is_alive() for client in clients), "clients never finished"

        acknowledged = {m: i for c in clients for m, i in c.acknowledged.items()}
        stored: list[dict[str, str]] = []
        for user in range(USERS):
            with client_for(gateway.url, f"crash-user-{user}") as reader:
                stored.extend(export_all(reader))
        copies = Counter(memory_["message_id"] for memory_ in stored)
        lost = [m for m in acknowledged if copies[m] == 0]
        duplicated = [m for m, n in copies.items() if n > 1]
        wrong_id = [
            m["message_id"] for m in stored if acknowledged.get(m["message_id"], m["id"]) != m["id"]
        ]
        retries = sum(c.retries for c in clients)
        print(
            f"\ncrash safety: {len(acknowledged)} saves acknowledged, {len(lost)} lost, "
            f"{len(duplicated)} duplicated, {kills} kills, {retries} client retries"
        )
        assert [c.unexpected for c in clients if c.unexpected] == []
        assert kills == KILLS
        assert len(acknowledged) == sum(c.sent for c in clients)
        assert lost == []
        assert duplicated == []
        assert wrong_id == []
        assert len(stored) == len(acknowledged)
    finally:
        stop.set()
        gateway.stop()
        loop.close()
        memory.stop()
