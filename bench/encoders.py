"""The two encoders the benches compare, on the bundled model: the service's own (ONNX Runtime,
as memory_service loads it) and sentence-transformers in float32 in torch, the in-process
baseline (a development dependency)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
from service_process import service_precision

from memory_service.embedding.model_dir import bundled_model_path, open_model_dir
from memory_service.embedding.onnx_encoder import OnnxEncoder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BATCH = 32


def cores() -> int:
    return len(os.sched_getaffinity(0))


def service_encoder() -> OnnxEncoder:
    """The service's encoder as memory_service runs it by default: one session, one thread
    per call, as many calls at once as there are cores (see `encode`), in the precision the
    bench's services run in (MEMORY_EMBED_PRECISION)."""
    return OnnxEncoder(open_model_dir(None), model_threads=1, precision=service_precision())


def reference_model() -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(bundled_model_path()), device="cpu")


def encode(encoder: OnnxEncoder, texts: list[str], batch: int = BATCH) -> np.ndarray:
    """The service encoder's vectors for texts, `batch` texts per call, one call per core at
    once (the service's embedding workers on their shared session)."""
    parts = [texts[start : start + batch] for start in range(0, len(texts), batch)]
    with ThreadPoolExecutor(cores()) as pool:
        done = pool.map(lambda part: encoder.encode(part, [False] * len(part)), parts)
        vectors = [v for part in done for v in part]
    return np.array(vectors, dtype=np.float32)


def onnx_rate(encoder: OnnxEncoder, texts: list[str]) -> float:
    """Texts/s of the service's encoder, batches of 32 as they come (not sorted first), one
    batch per core at once."""
    started = time.perf_counter()
    encode(encoder, texts)
    return len(texts) / (time.perf_counter() - started)


def reference_rate(model: SentenceTransformer, texts: list[str]) -> float:
    """Texts/s of SentenceTransformer.encode(batch_size=32) in float32, on torch's default
    threads (one per core)."""
    started = time.perf_counter()
    model.encode(
        texts,
        batch_size=BATCH,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return len(texts) / (time.perf_counter() - started)
