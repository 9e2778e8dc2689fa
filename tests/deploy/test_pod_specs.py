"""Every pod is probed, sized and locked down: probes, requests and limits, non-root,
read-only root filesystem, no privilege escalation, no capabilities, seccomp on."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import (
    OVERLAYS,
    Container,
    containers,
    find,
    module_of,
    of_kind,
    project_containers,
    render,
    runs_project_image,
    selects_workload,
    workloads,
)

ALL_CONTAINERS = [
    pytest.param(overlay, container, id=f"{overlay}-{container.name}")
    for overlay in OVERLAYS
    for container in containers(render(overlay))
]


def security(container: Container, key: str) -> object:
    """A container's effective security setting: its own, else the pod's."""
    own = container.spec.get("securityContext", {})
    if key in own:
        return own[key]
    return container.pod.get("securityContext", {}).get(key)


@pytest.mark.parametrize(("overlay", "container"), ALL_CONTAINERS)
def test_container_has_readiness_and_liveness_probes(overlay: str, container: Container) -> None:
    assert "readinessProbe" in container.spec
    assert "livenessProbe" in container.spec


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_memory_service_has_a_startup_probe_covering_model_load(overlay: str) -> None:
    docs = render(overlay)
    (memory,) = [c for c in project_containers(docs) if module_of(c) == "memory_service"]
    probe = memory.spec["startupProbe"]
    assert probe["grpc"] == memory.spec["readinessProbe"]["grpc"]
    # Loading the model takes 5-10 s unthrottled; allow well over a minute.
    assert probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3) >= 60


@pytest.mark.parametrize(("overlay", "container"), ALL_CONTAINERS)
def test_container_has_cpu_and_memory_requests_and_limits(
    overlay: str, container: Container
) -> None:
    resources = container.spec.get("resources", {})
    for kind in ("requests", "limits"):
        assert set(resources.get(kind, {})) >= {"cpu", "memory"}, f"{kind}: {resources}"


@pytest.mark.parametrize(("overlay", "container"), ALL_CONTAINERS)
def test_container_is_locked_down(overlay: str, container: Container) -> None:
    assert security(container, "runAsNonRoot") is True
    assert container.spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert container.spec["securityContext"]["allowPrivilegeEscalation"] is False
    assert container.spec["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "add" not in container.spec["securityContext"]["capabilities"]
    assert security(container, "seccompProfile") == {"type": "RuntimeDefault"}
    assert not security(container, "privileged")
    assert security(container, "runAsUser") not in (None, 0)


@pytest.mark.parametrize(
    ("overlay", "container"),
    [
        pytest.param(overlay, container, id=f"{overlay}-{container.name}")
        for overlay in OVERLAYS
        for container in containers(render(overlay))
        if runs_project_image(container)
    ],
)
def test_project_containers_get_a_writable_tmp(overlay: str, container: Container) -> None:
    mounts = {m["mountPath"]: m["name"] for m in container.spec.get("volumeMounts", [])}
    assert "/tmp" in mounts
    volumes = {v["name"]: v for v in container.pod.get("volumes", [])}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_memory_service_memory_limit_holds_the_model(overlay: str) -> None:
    docs = render(overlay)
    (memory,) = [c for c in project_containers(docs) if module_of(c) == "memory_service"]
    assert memory.spec["resources"]["limits"]["memory"] in {"1Gi", "1024Mi"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_and_disruption_budgets_point_at_workloads(overlay: str) -> None:
    docs = render(overlay)
    scaled = {
        hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind(docs, "HorizontalPodAutoscaler")
    }
    assert scaled == {"gateway", "chat-service"}
    for name in scaled:
        deployment = find(docs, "Deployment", name)
        # A replica count in the Deployment would fight the autoscaler on every apply.
        assert "replicas" not in deployment["spec"]
    budgets = of_kind(docs, "PodDisruptionBudget")
    covered = {
        workload["metadata"]["name"]
        for workload in workloads(docs)
        for pdb in budgets
        if selects_workload(pdb["spec"]["selector"], workload)
    }
    assert covered >= {"gateway", "memory-service", "chat-service", "qdrant"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_qdrant_keeps_its_data_on_a_claim_and_its_key_in_the_secret(overlay: str) -> None:
    docs = render(overlay)
    qdrant = find(docs, "StatefulSet", "qdrant")
    (claim,) = qdrant["spec"]["volumeClaimTemplates"]
    (container,) = qdrant["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/qdrant/storage"
    assert container["image"].split(":")[1].startswith("v")
    env = {var["name"]: var for var in container["env"]}
    ref = env["QDRANT__SERVICE__API_KEY"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("memory-layer-secrets", "qdrant-api-key")
    assert not ref.get("optional")
