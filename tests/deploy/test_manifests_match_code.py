"""Ports, probe service names, addresses and commands in the manifests agree with the code:
statically through the settings classes, and live by starting each service the way its
container does and asking it what the kubelet's probes would ask."""

from __future__ import annotations

import ast
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.chat.v1 import chat_pb2
from protos.memory.v1 import memory_pb2
from tests.deploy.conftest import LoadSettings
from tests.deploy.manifests import (
    NAMESPACE,
    OVERLAYS,
    REPO,
    SERVICES,
    Container,
    Manifest,
    container_env,
    find,
    render,
    service_container,
    settings_class,
    settings_env,
)

GRPC_SERVICES = {
    "memory_service": memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name,
    "chat_service": chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
}
# The port each service's main container port is named.
MAIN_PORT = {"gateway": "http", "memory_service": "grpc", "chat_service": "grpc"}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# The overlay the live test takes its configuration from: what production runs.
LIVE_OVERLAY = "prod"
STARTUP_TIMEOUT = 120.0


def probe_port(container: Container, probe: Manifest) -> int:
    for action in ("grpc", "httpGet", "tcpSocket"):
        if action in probe:
            port = probe[action]["port"]
            return container.port(port) if isinstance(port, str) else int(port)
    raise AssertionError(f"{container.name}: a probe without a port: {probe}")


def prestop_seconds(container: Container) -> float:
    pre_stop = container.spec.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", f"{container.name}: unexpected preStop {command}"
    return float(command[1])


def uvicorn_graceful_seconds() -> float:
    """The drain time `python -m gateway` gives uvicorn."""
    tree = ast.parse((REPO / "gateway" / "__main__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "timeout_graceful_shutdown":
            value = node.value
            assert isinstance(value, ast.Constant), "the drain time is not a literal"
            assert isinstance(value.value, int | float), value.value
            return float(value.value)
    raise AssertionError("python -m gateway sets no graceful shutdown timeout for uvicorn")


def drain_seconds(module: str, settings: object) -> float:
    if module == "gateway":
        return uvicorn_graceful_seconds()
    return float(settings.drain_seconds)  # type: ignore[attr-defined]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("module", sorted(SERVICES))
def test_ports_and_probes_match_the_settings(
    overlay: str, module: str, load_settings: LoadSettings
) -> None:
    docs = render(overlay)
    container = service_container(docs, module)
    settings = load_settings(settings_class(module), settings_env(container_env(docs, container)))
    port = container.port(MAIN_PORT[module])
    assert settings.port == port  # type: ignore[attr-defined]
    for name in PROBES:
        if name in container.spec:
            assert probe_port(container, container.spec[name]) == port, name
    if hasattr(settings, "metrics_port"):
        assert settings.metrics_port == container.port("metrics")
    assert settings.host == "0.0.0.0"  # type: ignore[attr-defined]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("module", sorted(GRPC_SERVICES))
def test_grpc_probes_ask_for_the_served_health_names(overlay: str, module: str) -> None:
    container = service_container(render(overlay), module)
    full_name = GRPC_SERVICES[module]
    for name in ("startupProbe", "readinessProbe"):
        assert container.spec[name]["grpc"].get("service") == full_name, name
    assert container.spec["livenessProbe"]["grpc"].get("service", "") in {"", full_name}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_probes_use_its_health_routes(overlay: str) -> None:
    container = service_container(render(overlay), "gateway")
    assert container.spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container.spec["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("module", sorted(SERVICES))
def test_grace_period_outlasts_the_drain(
    overlay: str, module: str, load_settings: LoadSettings
) -> None:
    docs = render(overlay)
    container = service_container(docs, module)
    settings = load_settings(settings_class(module), settings_env(container_env(docs, container)))
    grace = container.pod.get("terminationGracePeriodSeconds", 30)
    # Margin for closing the store and clients after the drain.
    assert grace >= prestop_seconds(container) + drain_seconds(module, settings) + 5


def service_port(docs: tuple[Manifest, ...], host: str, port: int) -> tuple[Manifest, Manifest]:
    """The Service an in-cluster address names, and the port entry it reaches."""
    name, namespace, *rest = host.split(".")
    assert namespace == NAMESPACE and rest == ["svc", "cluster", "local"], host
    service = find(docs, "Service", name)
    for entry in service["spec"]["ports"]:
        if entry["port"] == port:
            return service, entry
    raise AssertionError(f"Service {name} has no port {port}")


def target_container_port(docs: tuple[Manifest, ...], service: Manifest, entry: Manifest) -> int:
    selector = service["spec"]["selector"]
    for workload in docs:
        if workload["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        template = workload["spec"]["template"]
        labels = template["metadata"]["labels"]
        if all(labels.get(k) == v for k, v in selector.items()):
            target = entry.get("targetPort", entry["port"])
            for container in template["spec"]["containers"]:
                for port in container.get("ports", []):
                    if target in (port.get("name"), port["containerPort"]):
                        return int(port["containerPort"])
    raise AssertionError(f"Service {service['metadata']['name']} reaches no container port")


# (service, variable, the module listening at the far end or None for third-party)
ADDRESSES = [
    ("gateway", "GATEWAY_MEMORY_ADDR", "memory_service"),
    ("gateway", "GATEWAY_CHAT_ADDR", "chat_service"),
    ("chat_service", "CHAT_MEMORY_ADDR", "memory_service"),
    ("gateway", "GATEWAY_REDIS_URL", None),
    ("memory_service", "MEMORY_QDRANT_URL", None),
]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("module", "variable", "target"), ADDRESSES)
def test_addresses_reach_the_right_service_port(
    overlay: str, module: str, variable: str, target: str | None
) -> None:
    docs = render(overlay)
    value = container_env(docs, service_container(docs, module))[variable].value
    assert value
    if target is not None:
        # Headless service + DNS resolver: the client sees every pod and balances itself.
        assert value.startswith("dns:///"), value
        host, port = value.removeprefix("dns:///").rsplit(":", 1)
        service, entry = service_port(docs, host, int(port))
        assert service["spec"].get("clusterIP") == "None"
        assert entry["name"] == "grpc"
        listening = service_container(docs, target).port("grpc")
        assert target_container_port(docs, service, entry) == listening
    else:
        url = urlsplit(value)
        assert url.hostname and url.port
        service, entry = service_port(docs, url.hostname, url.port)
        target_container_port(docs, service, entry)


# ---- live: each service started the way its container starts it -----------------------


@dataclass
class Started:
    module: str
    container: Container
    process: subprocess.Popen[bytes]
    host: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def loopback_address() -> str:
    """A loopback address of its own, so the manifest's port is free even when another
    process on this machine listens on it at 127.0.0.1."""
    rng = random.Random()
    return f"127.{rng.randint(1, 254)}.{rng.randint(1, 254)}.{rng.randint(2, 254)}"


def base_environment() -> dict[str, str]:
    prefixes = ("GATEWAY_", "MEMORY_", "CHAT_")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(prefixes)}
    # As the image sets it: the model comes from the installed package, never the hub.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def live_environment(
    module: str, container_vars: dict[str, str], host: str, tmp: Path
) -> dict[str, str]:
    """The container's variables, changed only where this machine is not the cluster:
    listen address, store, metrics port (0: any free one) and downstream addresses."""
    env = dict(container_vars)
    if module == "memory_service":
        # No Qdrant server here: the embedded store, in a temp dir.
        env.pop("MEMORY_QDRANT_URL")
        env.pop("MEMORY_QDRANT_API_KEY")
        env.update(MEMORY_HOST=host, MEMORY_DATA_DIR=str(tmp / "memory"))
        env["MEMORY_METRICS_PORT"] = "0"
    elif module == "chat_service":
        env.update(CHAT_HOST=host, CHAT_METRICS_PORT="0")
    else:
        env.update(GATEWAY_HOST=host, GATEWAY_METRICS_PORT="0")
        # The in-process limiter; the Redis wiring is checked statically above.
        env.pop("GATEWAY_REDIS_URL")
        env.pop("GATEWAY_REDIS_PASSWORD")
    return env


def local_address(host: str, docs: tuple[Manifest, ...], module: str) -> str:
    return f"{host}:{service_container(docs, module).port('grpc')}"


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Started]]:
    missing = [m for m in SERVICES if not (REPO / m / "__main__.py").exists()]
    assert not missing, f"no __main__.py for {missing}: the manifests run `python -m` on them"
    docs = render(LIVE_OVERLAY)
    tmp = tmp_path_factory.mktemp("live")
    host = loopback_address()
    running: dict[str, Started] = {}
    try:
        for module in ("memory_service", "chat_service", "gateway"):
            container = service_container(docs, module)
            env = live_environment(module, settings_env(container_env(docs, container)), host, tmp)
            for variable, target in (
                ("GATEWAY_MEMORY_ADDR", "memory_service"),
                ("GATEWAY_CHAT_ADDR", "chat_service"),
                ("CHAT_MEMORY_ADDR", "memory_service"),
            ):
                if variable in env:
                    env[variable] = local_address(host, docs, target)
            command = container.spec["command"]
            assert command[0] == "python"
            log = tmp / f"{module}.log"
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    [sys.executable, *command[1:]],
                    cwd=tmp,
                    env={**base_environment(), **env},
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            running[module] = Started(module, container, process, host, log)
        yield running
    finally:
        for item in running.values():
            if item.process.poll() is None:
                item.process.kill()
                item.process.wait()


def wait_until(started: Started, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            pytest.fail(
                f"{started.module} exited with {started.process.returncode}:\n{started.output()}"
            )
        try:
            if ready():
                return
        except (grpc.RpcError, httpx.HTTPError) as exc:
            last = exc
        time.sleep(0.2)
    pytest.fail(f"{started.module} not ready in {STARTUP_TIMEOUT}s ({last}):\n{started.output()}")


def health_status(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return stub.Check(request, timeout=2).status


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(GRPC_SERVICES))
def test_grpc_service_serves_health_where_its_probes_ask(
    started: dict[str, Started], module: str
) -> None:
    item = started[module]
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in PROBES:
        probe = item.container.spec[name]
        address = f"{item.host}:{probe_port(item.container, probe)}"
        service = probe["grpc"].get("service", "")

        def serves(address: str = address, service: str = service) -> bool:
            return health_status(address, service) == serving

        wait_until(item, serves)


@pytest.mark.slow
def test_gateway_answers_its_probes_on_the_manifest_port(started: dict[str, Started]) -> None:
    item = started["gateway"]
    for name in ("livenessProbe", "readinessProbe"):
        probe = item.container.spec[name]["httpGet"]
        url = f"http://{item.host}:{probe_port(item.container, item.container.spec[name])}"
        url += probe["path"]

        # /readyz turns 200 once the memory service it points at is serving.
        def answers(url: str = url) -> bool:
            return httpx.get(url, timeout=2).status_code == 200

        wait_until(item, answers)


@pytest.mark.slow
def test_services_stop_cleanly_within_the_grace_period(started: dict[str, Started]) -> None:
    for module in ("gateway", "chat_service", "memory_service"):
        item = started[module]
        assert item.process.poll() is None, f"{module} is not running:\n{item.output()}"
        grace = item.container.pod.get("terminationGracePeriodSeconds", 30)
        item.process.send_signal(signal.SIGTERM)
        try:
            code = item.process.wait(timeout=grace - prestop_seconds(item.container))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{module} outlived its grace period after SIGTERM:\n{item.output()}")
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
        clean = {0, -signal.SIGTERM} if module == "gateway" else {0}
        assert code in clean, f"{module} exited with {code}:\n{item.output()}"
