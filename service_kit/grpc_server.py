"""gRPC server bootstrap shared by the services: interceptor, health, reflection, connection
ageing, and a run loop that drains on SIGTERM."""

from __future__ import annotations

import abc
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import grpc
import uvloop
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError

from service_kit.errors import UnavailableError
from service_kit.interceptor import ServiceInterceptor
from service_kit.logs import configure_logging
from service_kit.metrics import start_metrics
from service_kit.settings import ServiceSettings, describe_settings_error

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")

MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class AsyncHealthServicer(Protocol):
    """What the servers use of grpc_health's asyncio servicer, `health.aio.HealthServicer`
    (grpc-stubs' health.pyi predates it)."""

    async def set(self, service: str, status: int) -> None: ...


def async_health_servicer() -> AsyncHealthServicer:
    servicer: AsyncHealthServicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    return servicer


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    age_ms = int(settings.max_connection_age_seconds * 1000)
    return [
        ("grpc.max_connection_age_ms", age_ms),
        ("grpc.max_connection_age_grace_ms", int(settings.drain_seconds * 1000) + 5000),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
    ]


@dataclass
class BoundServer:
    """A started server reporting NOT_SERVING until its service says it is ready."""

    server: grpc.aio.Server
    port: int
    health: AsyncHealthServicer
    service_name: str
    drain_seconds: float

    async def set_status(self, status: int) -> None:
        for name in ("", self.service_name):
            await self.health.set(name, status)


class ServiceServer(abc.ABC):
    """What every running service is: a bound server that starts serving once its
    dependencies are ready and drains on stop. Subclasses declare `bound` and implement
    start_serving and stop (calling drain first)."""

    bound: BoundServer

    @property
    def server(self) -> grpc.aio.Server:
        return self.bound.server

    @property
    def port(self) -> int:
        return self.bound.port

    async def set_status(self, status: int) -> None:
        await self.bound.set_status(status)

    @abc.abstractmethod
    async def start_serving(self) -> None:
        """Open what the service needs, then report SERVING."""

    @abc.abstractmethod
    async def stop(self, grace: float | None = None) -> None:
        """Drain, then release what start_serving opened."""

    async def drain(self, grace: float | None = None) -> None:
        """Report NOT_SERVING and let in-flight calls finish (`grace`: the settings' drain)."""
        await self.set_status(NOT_SERVING)
        await self.server.stop(self.bound.drain_seconds if grace is None else grace)


async def bind_server(
    settings: ServiceSettings,
    port: int,
    service: ServiceDescriptor,
    add_servicer: Callable[[grpc.aio.Server], None],
    rpc_seconds: Any,
) -> BoundServer:
    """Bind (port 0 picks a free port), start and report NOT_SERVING."""
    service_name = service.full_name
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(settings.peer_tokens(), rpc_seconds)],
        options=server_options(settings),
    )
    add_servicer(server)
    health_servicer = async_health_servicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [service_name, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    bound_port = server.add_insecure_port(f"{settings.host}:{port}")
    if bound_port == 0:
        raise RuntimeError(f"cannot listen on {settings.host}:{port}")
    bound = BoundServer(server, bound_port, health_servicer, service_name, settings.drain_seconds)
    await bound.set_status(NOT_SERVING)
    await server.start()
    return bound


async def run_until_signalled(
    name: str,
    start: Callable[[], Coroutine[object, object, None]],
    stop: Callable[[], Awaitable[None]],
) -> None:
    """Run `start` (loading models, opening stores), then serve until SIGTERM or SIGINT,
    then `stop` (which drains). A signal during start cancels it."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        startup = asyncio.create_task(start())
        done, _ = await asyncio.wait(
            {startup, asyncio.create_task(stopping.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if startup in done:
            startup.result()
            await stopping.wait()
        else:
            startup.cancel()
    finally:
        log.info("%s shutting down", name)
        await stop()


async def serve(
    name: str,
    settings: S,
    create: Callable[[S], Awaitable[ServiceServer]],
) -> None:
    """The process's main: log as `name`, bind, serve metrics, run until signalled."""
    configure_logging(name, settings.log_level)
    running = await create(settings)
    start_metrics(settings.metrics_port)
    spoken = name.replace("_", " ")
    log.info("%s listening on %s:%d", spoken, settings.host, running.port)
    await run_until_signalled(spoken, running.start_serving, running.stop)


class SetAtStartup(Generic[T]):
    """A servicer attribute that startup sets (models loaded, store opened); read before
    then, it fails with `unavailable`, which callers may retry."""

    def __init__(self, starting: str, error: type[UnavailableError] = UnavailableError) -> None:
        self._starting = starting
        self._error = error
        self._attribute = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attribute = f"_{name}"

    def __get__(self, instance: object, owner: type | None = None) -> T:
        value: T | None = getattr(instance, self._attribute, None)
        if value is None:
            raise self._error(self._starting)
        return value

    def __set__(self, instance: object, value: T) -> None:
        setattr(instance, self._attribute, value)


def run_main(
    name: str,
    serve: Callable[[], Coroutine[object, object, None]],
    failures: tuple[type[Exception], ...] = (RuntimeError,),
) -> int:
    """A service's `python -m` entry: run `serve` and turn bad settings and the startup
    failures it names into a message on stderr and exit status 1."""
    try:
        uvloop.run(serve())
    except ValidationError as exc:
        print(f"{name}: invalid settings:\n{describe_settings_error(exc)}", file=sys.stderr)
        return 1
    except failures as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    return 0
