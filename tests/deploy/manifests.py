"""Reading the rendered Kubernetes manifests: overlays rendered with `kubectl kustomize`,
the containers that run the project image, and the settings class each one reads."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]
OVERLAYS_DIR = REPO / "deploy" / "k8s" / "overlays"
OVERLAYS = sorted(path.name for path in OVERLAYS_DIR.iterdir() if path.is_dir())
NAMESPACE = "memory-layer"
# The image every service runs; Qdrant and Redis are third-party images.
PROJECT_IMAGE = "memory-layer"
# `python -m <module>` per service, and the Kubernetes name it is deployed under.
SERVICES = {
    "gateway": "gateway",
    "memory_service": "memory-service",
    "chat_service": "chat-service",
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
# Stands in for any value a Secret supplies: long enough for every length check.
SECRET_PLACEHOLDER = "s" * 48


Manifest = dict[str, Any]


@cache
def render(overlay: str) -> tuple[Manifest, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise AssertionError("kubectl is not on PATH; the deploy tests render with it")
    out = subprocess.run(
        [kubectl, "kustomize", str(OVERLAYS_DIR / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def of_kind(docs: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def find(docs: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    for doc in of_kind(docs, kind):
        if doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name!r} in the rendered manifests")


def pod_spec(workload: Manifest) -> Manifest:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def workloads(docs: tuple[Manifest, ...]) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]


@dataclass(frozen=True)
class Container:
    workload: Manifest
    spec: Manifest

    @property
    def name(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}:{self.spec['name']}"

    @property
    def pod(self) -> Manifest:
        return pod_spec(self.workload)

    def port(self, name: str) -> int:
        for port in self.spec.get("ports", []):
            if port.get("name") == name:
                return int(port["containerPort"])
        raise AssertionError(f"{self.name} has no container port named {name!r}")


def containers(docs: tuple[Manifest, ...]) -> Iterator[Container]:
    for workload in workloads(docs):
        spec = pod_spec(workload)
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield Container(workload, container)


def runs_project_image(container: Container) -> bool:
    image = container.spec["image"].split("@")[0]
    repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return repository.rsplit("/", 1)[-1] == PROJECT_IMAGE


def project_containers(docs: tuple[Manifest, ...]) -> list[Container]:
    found = [c for c in containers(docs) if runs_project_image(c)]
    assert found, "no container runs the project image"
    return found


def module_of(container: Container) -> str:
    """The service a project container runs, from its `python -m <module>` command."""
    command = container.spec.get("command", []) + container.spec.get("args", [])
    assert command[:2] == ["python", "-m"] and len(command) == 3, (
        f"{container.name} runs {command!r}, not `python -m <service>`"
    )
    assert command[2] in SERVICES, f"{container.name} runs unknown module {command[2]!r}"
    return command[2]


def service_container(docs: tuple[Manifest, ...], module: str) -> Container:
    matches = [c for c in project_containers(docs) if module_of(c) == module]
    assert len(matches) == 1, f"expected one container running {module}, found {len(matches)}"
    return matches[0]


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None
    # Where the value comes from: "literal", "configmap" or "secret".
    source: str
    optional: bool = False


def container_env(docs: tuple[Manifest, ...], container: Container) -> dict[str, EnvVar]:
    """Every variable the container gets, with values resolved from the rendered ConfigMaps;
    Secret values are unknown here and come back as None."""
    env: dict[str, EnvVar] = {}
    for source in container.spec.get("envFrom", []):
        prefix = source.get("prefix", "")
        assert "secretRef" not in source, (
            f"{container.name}: envFrom a Secret hides which variables it sets; "
            "use secretKeyRef per variable"
        )
        config_map = find(docs, "ConfigMap", source["configMapRef"]["name"])
        for key, value in config_map.get("data", {}).items():
            env[prefix + key] = EnvVar(prefix + key, str(value), "configmap")
    for var in container.spec.get("env", []):
        name = var["name"]
        if "value" in var:
            env[name] = EnvVar(name, str(var["value"]), "literal")
            continue
        ref = var.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            key_ref = ref["configMapKeyRef"]
            data = find(docs, "ConfigMap", key_ref["name"]).get("data", {})
            assert key_ref["key"] in data or key_ref.get("optional"), (
                f"{container.name}: {name} refers to missing key {key_ref['key']!r}"
            )
            value = data.get(key_ref["key"])
            env[name] = EnvVar(name, value, "configmap", bool(key_ref.get("optional")))
        elif "secretKeyRef" in ref:
            optional = bool(ref["secretKeyRef"].get("optional"))
            env[name] = EnvVar(name, None, "secret", optional)
        else:
            raise AssertionError(f"{container.name}: {name} has a value source this test lacks")
    return env


def settings_class(module: str) -> type[BaseSettings]:
    """The pydantic-settings class `<module>/config.py` defines; an import error is a failure."""
    config = importlib.import_module(f"{module}.config")
    classes = [
        value
        for value in vars(config).values()
        if isinstance(value, type)
        and issubclass(value, BaseSettings)
        and value is not BaseSettings
        and value.__module__ == config.__name__
    ]
    assert len(classes) == 1, f"{module}.config should define one settings class: {classes}"
    return classes[0]


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable (upper case) -> field, as pydantic-settings reads them."""
    prefix = cls.model_config.get("env_prefix", "")
    assert not cls.model_config.get("case_sensitive"), "names are compared case-insensitively"
    names: dict[str, str] = {}
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        choices: list[str | AliasPath] = []
        if alias is None:
            choices = [prefix + field_name]
        elif isinstance(alias, str):
            choices = [alias]
        elif isinstance(alias, AliasChoices):
            choices = list(alias.choices)
        elif isinstance(alias, AliasPath):
            choices = [alias]
        for choice in choices:
            name = choice if isinstance(choice, str) else str(choice.path[0])
            names[name.upper()] = field_name
    return names


def settings_env(env: dict[str, EnvVar]) -> dict[str, str]:
    """The container's variables as strings, Secret values replaced by a placeholder."""
    return {
        name: SECRET_PLACEHOLDER if var.source == "secret" else (var.value or "")
        for name, var in env.items()
    }


def selects_workload(selector: Manifest, workload: Manifest) -> bool:
    """Whether a label selector (matchLabels only) picks the workload's pods."""
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are modelled"
    labels = workload["spec"]["template"]["metadata"].get("labels", {})
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())
