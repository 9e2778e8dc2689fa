"""SIGTERM to memory_service with saves in flight, and a memory service too slow for the
gateway's deadline: what the extension sees in each case, and what the service sees."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.memory.v1 import memory_pb2_grpc
from tests.support.reliability import client_for, export_all, gateway_settings, memory_process
from tests.support.stack import GatewayServer, LoopThread

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
IN_FLIGHT = 4


def watch_health(address: str, seen: list[tuple[float, int]], ended: threading.Event) -> None:
    with grpc.insecure_channel(address) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        try:
            for update in stream:
                seen.append((time.monotonic(), int(update.status)))
        except grpc.RpcError:
            pass
        finally:
            ended.set()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_drains_in_flight_saves_refuses_new_ones_and_reports_not_serving_first(
    tmp_path: Path,
) -> None:
    # Every window of a long text embedded (not only the first) keeps these saves running
    # for seconds.
    memory = memory_process(tmp_path / "memory", drain_seconds=20.0, MEMORY_LONG_TEXT="mean")
    memory.start()
    loop = LoopThread()
    gateway = GatewayServer(loop, gateway_settings(memory.port, grpc_timeout_seconds=30.0)).start()
    try:
        seen: list[tuple[float, int]] = []
        watch_ended = threading.Event()
        threading.Thread(
            target=watch_health, args=(memory.address, seen, watch_ended), daemon=True
        ).start()
        assert _wait(lambda: bool(seen)) and seen[-1][1] == SERVING

        # Long texts are embedded chunk by chunk (a few seconds for the four of them here),
        # so these saves are still running when the signal arrives and all of them fit in
        # the drain time.
        def long_save(n: int) -> tuple[httpx.Response, float]:
            body = {
                "prompt": f"draft {n}: " + "words to embed slowly " * 1200,
                "message_id": f"long-{n}",
            }
            with client_for(gateway.url, "drain-user", timeout=60.0) as client:
                response = client.post("/save-prompt", json=body)
                return response, time.monotonic()

        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            in_flight = [pool.submit(long_save, n) for n in range(IN_FLIGHT)]
            time.sleep(0.5)
            assert not any(f.done() for f in in_flight), "saves finished before the signal"
            signalled = time.monotonic()
            memory.terminate()
            assert _wait(lambda: seen[-1][1] == NOT_SERVING, timeout=10.0)
            not_serving_at = next(t for t, status in seen if status == NOT_SERVING)

            with client_for(gateway.url, "drain-user", timeout=30.0) as client:
                started = time.monotonic()
                refused = client.post("/save-prompt", json={"prompt": "arrived during the drain"})
                refused_after = time.monotonic() - started
            drained, finished_at = zip(*(f.result(timeout=60) for f in in_flight), strict=True)

        exit_code = memory.process.wait(60) if memory.process else None
        print(
            f"\ngraceful shutdown: {len(drained)} in-flight saves -> "
            f"{[r.status_code for r in drained]}, new save -> {refused.status_code} "
            f"in {refused_after:.2f}s, NOT_SERVING {not_serving_at - signalled:.2f}s after "
            f"SIGTERM, exit code {exit_code}"
        )
        assert [r.status_code for r in drained] == [200] * IN_FLIGHT, memory.log_tail()
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"].isdigit()
        assert refused_after < 10.0
        assert exit_code == 0
        # Probes learn of the shutdown while the service is still finishing its work.
        assert not_serving_at < max(finished_at)
        assert [status for _, status in seen][:2] == [SERVING, NOT_SERVING]

        memory.start()
        with client_for(gateway.url, "drain-user") as client:
            # The gateway's channel may still be waiting out its reconnect backoff: a 503
            # asks the client to retry.
            assert _wait(lambda: client.get("/export").status_code == 200)
            stored = {m["message_id"] for m in export_all(client)}
        assert stored == {f"long-{n}" for n in range(IN_FLIGHT)}
    finally:
        gateway.stop()
        loop.close()
        memory.stop()


def _wait(condition: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


class SlowMemoryService(memory_pb2_grpc.MemoryServiceServicer):
    """Answers nothing in time; records whether each call it was sitting on got cancelled."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started = 0
        self.cancelled = 0

    async def _stall(self, context: grpc.aio.ServicerContext) -> None:
        self.started += 1
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        await context.abort(grpc.StatusCode.INTERNAL, "a slow service answered after all")

    async def SaveMemory(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._stall(context)

    async def ListMemories(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._stall(context)

    async def Search(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._stall(context)


async def _start_slow(service: SlowMemoryService) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.mark.timeout(120)
def test_a_slow_memory_service_gets_504_within_the_deadline_and_sees_the_cancellation() -> None:
    deadline = 1.0
    service = SlowMemoryService(delay=30.0)
    loop = LoopThread()
    server, port = loop.run(_start_slow(service))
    gateway = GatewayServer(loop, gateway_settings(port, grpc_timeout_seconds=deadline)).start()
    try:
        timings = []
        with client_for(gateway.url, "slow-user", timeout=30.0) as client:
            for method, path, body in (
                ("POST", "/save-prompt", {"prompt": "will time out"}),
                ("GET", "/memories", None),
                ("POST", "/search", {"query": "will time out"}),
            ):
                started = time.monotonic()
                response = client.request(method, path, json=body)
                timings.append(time.monotonic() - started)
                assert response.status_code == 504, (path, response.text)
                assert response.json() == {"detail": "The service did not answer in time"}
        assert _wait(lambda: service.cancelled == service.started == 3, timeout=5.0)
        print(
            f"\ndeadlines: {len(timings)} calls -> 504 after "
            f"{', '.join(f'{t:.2f}s' for t in timings)} (deadline {deadline}s); "
            f"{service.cancelled}/{service.started} slow handlers saw the cancellation"
        )
        # The deadline, not the service's 30 s, decides; the slack is for a loaded machine.
        assert all(deadline <= t < deadline + 4.0 for t in timings)
    finally:
        gateway.stop()
        loop.run(server.stop(0))
        loop.close()
