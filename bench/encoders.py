"""The two encoders the benches compare, on the bundled model: the service's own (ONNX Runtime,
as memory_service loads it) and sentence-transformers in float32 in torch, the in-process
baseline (a development dependency)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import numpy as np

from memory_service.model_loading import bundled_model_path, open_model_dir
from memory_service.onnx_encoder import OnnxEncoder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BATCH = 32


def service_encoder(threads: int = 0) -> OnnxEncoder:
    """The service's encoder; 0 threads: all the cores this process may use, in one call."""
    return OnnxEncoder(open_model_dir(None), model_threads=threads or len(os.sched_getaffinity(0)))


def reference_model() -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(bundled_model_path()), device="cpu")


def encode(encoder: OnnxEncoder, texts: list[str], batch: int = BATCH) -> np.ndarray:
    """The service encoder's vectors for texts, `batch` texts per call."""
    vectors: list[np.ndarray] = []
    for start in range(0, len(texts), batch):
        part = texts[start : start + batch]
        vectors.extend(encoder.encode(part, [False] * len(part)))
    return np.array(vectors, dtype=np.float32)


def onnx_rate(encoder: OnnxEncoder, texts: list[str]) -> float:
    """Texts/s of the service's encoder, batches of 32 as they come (not sorted first)."""
    started = time.perf_counter()
    encode(encoder, texts)
    return len(texts) / (time.perf_counter() - started)


def reference_rate(model: SentenceTransformer, texts: list[str]) -> float:
    """Texts/s of SentenceTransformer.encode(batch_size=32) in float32."""
    started = time.perf_counter()
    model.encode(
        texts,
        batch_size=BATCH,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return len(texts) / (time.perf_counter() - started)
