"""Fixtures of the deploy tests: loading a settings class from exactly the variables a
container gets, nothing inherited from the test's own environment."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from pydantic_settings import BaseSettings

from tests.deploy.manifests import env_names

LoadSettings = Callable[[type[BaseSettings], dict[str, str]], BaseSettings]


@pytest.fixture
def load_settings(monkeypatch: pytest.MonkeyPatch) -> LoadSettings:
    def _load(cls: type[BaseSettings], env: dict[str, str]) -> BaseSettings:
        known = set(env_names(cls))
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        for name in list(os.environ):
            if name.upper() in known or (prefix and name.upper().startswith(prefix)):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        # A container has no .env file; neither does this load.
        return cls(_env_file=None)  # type: ignore[call-arg]

    return _load
