"""chat_service's server as `python -m chat_service` starts it."""

from __future__ import annotations

from tests.support.imports import packages_loaded_by

# Starts an offline chat_service on port 0 (memory_service need not run: chats then go on
# without memories) and names the packages loaded.
OFFLINE_START = """
import asyncio
from chat_service.config import ChatSettings
from chat_service.server import create_server

async def main():
    settings = ChatSettings(
        host="127.0.0.1", port=0, metrics_port=-1, memory_addr="127.0.0.1:1", service_token="t",
        llm_provider="offline",
    )
    server = await create_server(settings)
    await server.start_serving()
    await server.stop(0)

asyncio.run(main())
"""


def test_an_offline_chat_service_loads_no_http_client() -> None:
    # httpx loads with the first provider that calls an API: offline, the service holds none.
    loaded = packages_loaded_by(OFFLINE_START)
    assert {"grpc", "chat_service"} <= loaded
    assert "httpx" not in loaded
