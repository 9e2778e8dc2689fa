"""Model settings: precision and how the embedding threads are shared among workers."""

from __future__ import annotations

import pytest

from memory_service.config import MemorySettings
from memory_service.model_loading import embed_parallelism, native_bfloat16, resolve_precision


def test_precision_setting() -> None:
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"
    assert resolve_precision("auto") == ("bfloat16" if native_bfloat16() else "float32")
    with pytest.raises(ValueError, match="float16"):
        resolve_precision("float16")


def test_workers_share_the_model_threads() -> None:
    def plan(threads: int, workers: int) -> dict[str, int]:
        return embed_parallelism(MemorySettings(torch_threads=threads, embed_workers=workers))

    assert plan(4, 0) == {"workers": 4, "model_threads": 1}
    assert plan(4, 2) == {"workers": 2, "model_threads": 2}
    assert plan(2, 8) == {"workers": 2, "model_threads": 1}
    assert plan(1, 0) == {"workers": 1, "model_threads": 1}
