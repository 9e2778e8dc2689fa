"""API keys across real processes: memory_service with the embedded store and gateways
started as `python -m ...` on loopback. Two gateways share one store of keys, a revocation
through one reaches the other within the documented bound, keys outlive a restart of every
service, and deleting a user through the admin route deletes their keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.api_keys import CACHE_SECONDS
from gateway.auth import UNAUTHORIZED_DETAIL
from tests.support.browser import gateway_process, token
from tests.support.stack import GatewayProcess, MemoryProcess

pytestmark = pytest.mark.slow

# What docs/api/keys.md promises: a key revoked anywhere is refused everywhere within this.
REVOCATION_BOUND_SECONDS = 5.0


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


class Services:
    """memory_service and `gateways` gateways on one data directory."""

    def __init__(self, data_dir: Path, gateways: int) -> None:
        self.memory = MemoryProcess(data_dir, MEMORY_EMBED_THREADS="1").start()
        self.gateways: list[GatewayProcess] = []
        self.urls: list[str] = []
        try:
            for _ in range(gateways):
                process = gateway_process(self.memory.address).start()
                self.gateways.append(process)
                self.urls.append(process.url)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in self.gateways:
            process.stop()
        self.memory.stop()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Services]]:
    running: list[Services] = []
    yield running
    for each in running:
        each.stop()


def _search(url: str, key: str) -> httpx.Response:
    return httpx.post(f"{url}/search", json={"query": "anything"}, headers=bearer(key), timeout=30)


def test_revoked_through_one_gateway_refused_by_the_other_within_the_bound(
    tmp_path: Path, services: list[Services]
) -> None:
    stack = Services(tmp_path / "data", gateways=2)
    services.append(stack)
    first, second = stack.urls
    session = bearer(token("replicated-user"))
    created = httpx.post(f"{first}/keys", json={"name": "script"}, headers=session, timeout=30)
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    # Known to the other gateway at once: the keys live in memory_service, not in a gateway.
    assert _search(second, key).status_code == 200
    assert _search(first, key).status_code == 200

    revoked = httpx.delete(f"{first}/keys/{key_id}", headers=session, timeout=30)
    assert revoked.status_code == 204
    revoked_at = time.monotonic()
    # The gateway that revoked it refuses it at once.
    assert _search(first, key).status_code == 401
    while (response := _search(second, key)).status_code == 200:
        assert time.monotonic() - revoked_at < REVOCATION_BOUND_SECONDS
        time.sleep(0.1)
    refused_after = time.monotonic() - revoked_at
    assert response.status_code == 401
    assert response.json() == {"detail": UNAUTHORIZED_DETAIL}
    assert refused_after < REVOCATION_BOUND_SECONDS
    assert CACHE_SECONDS < REVOCATION_BOUND_SECONDS


def test_keys_survive_a_restart_and_go_with_their_user(
    tmp_path: Path, services: list[Services]
) -> None:
    data_dir = tmp_path / "data"
    before = Services(data_dir, gateways=1)
    services.append(before)
    url = before.urls[0]
    user = "restarted-user"
    session = bearer(token(user))
    made = httpx.post(
        f"{url}/keys", json={"name": "laptop", "scopes": ["read"]}, headers=session, timeout=30
    )
    assert made.status_code == 201
    key = made.json()["key"]
    assert _search(url, key).status_code == 200
    listed_before = httpx.get(f"{url}/keys", headers=session, timeout=30).json()
    before.stop()
    services.remove(before)

    after = Services(data_dir, gateways=1)
    services.append(after)
    url = after.urls[0]
    assert _search(url, key).status_code == 200
    listed_after = httpx.get(f"{url}/keys", headers=session, timeout=30).json()
    assert [k["id"] for k in listed_after["keys"]] == [k["id"] for k in listed_before["keys"]]
    assert listed_after["keys"][0]["scopes"] == ["read"]
    # Still read-only after the restart.
    saved = httpx.post(f"{url}/save-prompt", json={"prompt": "x"}, headers=bearer(key), timeout=30)
    assert saved.status_code == 403

    # Emptying one's memories leaves keys alone; deleting the user does not.
    emptied = httpx.delete(f"{url}/memories", headers=session, timeout=30)
    assert emptied.status_code == 200
    assert _search(url, key).status_code == 200
    admin = bearer(token("the-admin", admin=True))
    deleted = httpx.delete(f"{url}/admin/users/{user}", headers=admin, timeout=30)
    assert deleted.status_code == 200
    refused = _search(url, key)
    assert (refused.status_code, refused.json()) == (401, {"detail": UNAUTHORIZED_DETAIL})
    assert httpx.get(f"{url}/keys", headers=session, timeout=30).json() == {"keys": []}
