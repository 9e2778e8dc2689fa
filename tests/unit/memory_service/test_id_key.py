"""The key of text-derived ids: MEMORY_ID_KEY when set (required with a Qdrant server, which
replicas share), else one the embedded store makes once and keeps in its data dir."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from memory_service.config import MemorySettings
from memory_service.server import ID_KEY_FILE, load_id_key


def test_the_embedded_store_makes_its_key_once_and_keeps_it(tmp_path: Path) -> None:
    settings = MemorySettings(data_dir=tmp_path, service_token=SecretStr("t"))
    first = load_id_key(settings)
    assert len(first) == 32
    assert load_id_key(settings) == first
    assert stat.S_IMODE((tmp_path / ID_KEY_FILE).stat().st_mode) == 0o600
    other = MemorySettings(data_dir=tmp_path / "other", service_token=SecretStr("t"))
    (tmp_path / "other").mkdir()
    assert load_id_key(other) != first


def test_a_set_key_wins_and_a_qdrant_server_needs_one(tmp_path: Path) -> None:
    given = MemorySettings(data_dir=tmp_path, id_key=SecretStr("shared-key"))
    assert load_id_key(given) == b"shared-key"
    assert not (tmp_path / ID_KEY_FILE).exists()
    with pytest.raises(ValidationError, match="MEMORY_ID_KEY must be set"):
        MemorySettings(qdrant_url="http://qdrant:6333")
    MemorySettings(qdrant_url="http://qdrant:6333", id_key=SecretStr("shared-key"))
