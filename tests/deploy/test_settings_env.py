"""Every variable the manifests set is one the service's settings class reads, every
required setting is set, and each service accepts the configuration it is deployed with."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import LoadSettings
from tests.deploy.manifests import (
    OVERLAYS,
    SERVICES,
    container_env,
    env_names,
    module_of,
    project_containers,
    render,
    service_container,
    settings_class,
    settings_env,
)


@pytest.mark.parametrize("module", sorted(SERVICES))
def test_every_service_has_a_settings_class(module: str) -> None:
    cls = settings_class(module)
    assert env_names(cls), f"{cls.__name__} reads no variables"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_is_deployed(overlay: str) -> None:
    docs = render(overlay)
    assert sorted(module_of(c) for c in project_containers(docs)) == sorted(SERVICES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_set_is_read_by_the_services_settings(overlay: str) -> None:
    docs = render(overlay)
    unread: dict[str, list[str]] = {}
    for container in project_containers(docs):
        known = env_names(settings_class(module_of(container)))
        names = container_env(docs, container)
        stray = sorted(name for name in names if name.upper() not in known)
        if stray:
            unread[container.name] = stray
    assert unread == {}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_required_settings_are_set(overlay: str) -> None:
    docs = render(overlay)
    missing: dict[str, list[str]] = {}
    for module in SERVICES:
        cls = settings_class(module)
        names = env_names(cls)
        env = container_env(docs, service_container(docs, module))
        set_fields = {names[name.upper()] for name in env if name.upper() in names}
        required = {name for name, field in cls.model_fields.items() if field.is_required()}
        if required - set_fields:
            missing[module] = sorted(required - set_fields)
    assert missing == {}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("module", sorted(SERVICES))
def test_service_accepts_its_deployed_configuration(
    overlay: str, module: str, load_settings: LoadSettings
) -> None:
    """The settings validators (secrets present, lists, URLs, numbers) pass with exactly the
    variables the container gets, each Secret key holding a value."""
    docs = render(overlay)
    env = settings_env(container_env(docs, service_container(docs, module)))
    load_settings(settings_class(module), env)


# Which Secret key each variable carrying a service token must come from: every calling
# service has a token of its own, and each server knows whose token is whose.
SERVICE_TOKENS = {
    "gateway": {"GATEWAY_SERVICE_TOKEN": "gateway-token"},
    "chat-service": {"CHAT_SERVICE_TOKEN": "chat-token", "CHAT_GATEWAY_TOKEN": "gateway-token"},
    "memory-service": {"MEMORY_GATEWAY_TOKEN": "gateway-token", "MEMORY_CHAT_TOKEN": "chat-token"},
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_caller_has_its_own_service_token(overlay: str) -> None:
    docs = render(overlay)
    found: dict[str, dict[str, str]] = {}
    for container in project_containers(docs):
        tokens = {}
        for var in container.spec.get("env", []):
            if var["name"].endswith("_TOKEN"):
                ref = var["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "memory-layer-secrets", var["name"]
                assert not ref.get("optional"), f"{container.name} may start without {var}"
                tokens[var["name"]] = ref["key"]
        found[container.workload["metadata"]["name"]] = tokens
    # The shared token of local mode is never deployed: it would carry admin rights to every
    # service that holds it.
    assert found == SERVICE_TOKENS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_never_sit_in_config_maps(overlay: str) -> None:
    docs = render(overlay)
    secret_like = ("TOKEN", "SECRET", "API_KEY", "PASSWORD")
    for container in project_containers(docs):
        for name, var in container_env(docs, container).items():
            if any(word in name for word in secret_like):
                assert var.source == "secret", f"{container.name}: {name} is not from a Secret"
