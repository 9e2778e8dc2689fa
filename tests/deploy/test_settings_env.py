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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shared_service_token_comes_from_one_secret_key(overlay: str) -> None:
    docs = render(overlay)
    refs = set()
    for container in project_containers(docs):
        token = [
            var
            for var in container.spec.get("env", [])
            if var["name"] == "MEMORY_LAYER_SERVICE_TOKEN"
        ]
        assert len(token) == 1, f"{container.name} does not get MEMORY_LAYER_SERVICE_TOKEN"
        ref = token[0]["valueFrom"]["secretKeyRef"]
        assert not ref.get("optional"), f"{container.name} may start without a service token"
        refs.add((ref["name"], ref["key"]))
    assert refs == {("memory-layer-secrets", "service-token")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_never_sit_in_config_maps(overlay: str) -> None:
    docs = render(overlay)
    secret_like = ("TOKEN", "SECRET", "API_KEY", "PASSWORD")
    for container in project_containers(docs):
        for name, var in container_env(docs, container).items():
            if any(word in name for word in secret_like):
                assert var.source == "secret", f"{container.name}: {name} is not from a Secret"
