"""Text embeddings with sentence-transformers: concurrent requests coalesced into batches,
long text split into model-sized chunks rather than cut off, and users served in turn so
one user's heavy requests queue behind their own, not everyone's."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from memory_service import metrics
from memory_service.model_loading import Precision, precision_scope, set_model_threads
from memory_service.packed import PackedBertEncoder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


log = logging.getLogger(__name__)

CHUNK_OVERLAP_TOKENS = 32
# Bulk batches (texts of owners with a backlog, or long texts) run on threads at this
# niceness: alone they run as fast as ever, but the kernel gives other users' batches the
# CPU first. An unprivileged thread can lower its priority but never raise it back, so
# bulk work has threads of its own.
BULK_NICENESS = 10
# Windows embedded for one text at most: a save's cost is bounded whatever its length.
MAX_WINDOWS_PER_TEXT = 32
# A text this long costs a full model window or more.
BULK_TEXT_CHARS = 1_000
# Bulk batches may hold every worker only once no interactive batch has started for this
# long; until then they leave one worker's cores to the interactive lane.
SHARED_SECONDS = 2.0


def _bulk_thread(model_threads: int) -> None:
    set_model_threads(model_threads)
    with contextlib.suppress(AttributeError, OSError):
        # On Linux a thread id names one thread, so only this one is reniced.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICENESS)


@dataclass
class _Pending:
    text: str
    future: asyncio.Future[np.ndarray]
    owner: str
    # Queries are embedded from their first window only: bounded work, whatever their size.
    first_window_only: bool


class Embedder:
    """Embeds texts on worker threads, batching whatever requests arrive together.

    Tokenizing, chunking and the model all run on those threads, so the event loop only
    queues texts and hands back vectors. BERT models with mean pooling (the bundled one)
    run packed (see packed.py): compute goes to real tokens, not to padding; any other
    model goes through `SentenceTransformer.encode`.

    Texts wait per owner (the user they are embedded for), and batches run in two lanes of
    `workers` threads each. An owner with a backlog (more than one text waiting or being
    embedded, or a long text) is served in the bulk lane, whose threads run at lower CPU
    priority; every other owner's text goes to the interactive lane. So one user's import
    has all the cores while nobody else needs them, and another user's text neither waits
    for a free worker nor for the CPU: while interactive batches keep coming (within
    SHARED_SECONDS of each other), bulk batches leave one worker's cores to them. Within
    a lane a batch takes one text from each waiting owner in turn, and an owner has at
    most `owner_workers` batches running.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        model_name: str,
        *,
        batch_size: int = 32,
        max_wait_ms: float = 2.0,
        busy_wait_ms: float = 0.0,
        encode_batch_size: int = 8,
        precision: Precision = "float32",
        packed: bool = True,
        workers: int = 1,
        model_threads: int = 0,
        owner_workers: int = 0,
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.precision = precision
        self.batch_size = batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.busy_wait = busy_wait_ms / 1000.0
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
        self._packed = (
            PackedBertEncoder(model, model.truncate_dim, precision)
            if packed and PackedBertEncoder.supports(model)
            else None
        )
        # Owners in the order they are next served; a served owner moves to the back.
        self._waiting: dict[str, deque[_Pending]] = {}
        self._running: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        # Each worker runs a batch on `model_threads` threads of its own. One thread per
        # worker keeps the cores busy without the workers waiting on each other, and holds up
        # better than one many-threaded call when other processes take CPU.
        self.workers = workers
        # 0: all of a lane's workers.
        self.owner_workers = owner_workers or workers
        # Batches running in each lane (True: bulk).
        self._lane_busy = {False: 0, True: 0}
        self._interactive_at = -SHARED_SECONDS
        self._pool = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="embedder",
            initializer=set_model_threads,
            initargs=(model_threads,),
        )
        self._bulk_pool = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="embedder-bulk",
            initializer=_bulk_thread,
            initargs=(model_threads,),
        )
        # encode() tokenizes with the model's own tokenizer: one padded call at a time.
        self._encode_lock = threading.Lock()
        # The fast tokenizer keeps padding state and is not thread-safe, and encode() uses
        # the model's own: chunking gets a copy of its own, used by one thread at a time.
        self._chunk_tokenizer = copy.deepcopy(model.tokenizer)
        self._chunk_lock = threading.Lock()

    @property
    def mode(self) -> str:
        workers = f", {self.workers} workers" if self.workers > 1 else ""
        return f"{'packed' if self._packed else 'padded'} {self.precision}{workers}"

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
        self._bulk_pool.shutdown(wait=False, cancel_futures=True)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        with self._chunk_lock:
            encoding = self._chunk_tokenizer(
                texts,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        return list(encoding["input_ids"])

    def _windows(self, n: int) -> list[tuple[int, int]]:
        """Token ranges of the chunks of an n-token text, overlapping a little at the seams;
        past MAX_WINDOWS_PER_TEXT, that many spread evenly from its start to its end."""
        if n <= self.window:
            return [(0, n)]
        step = self.window - CHUNK_OVERLAP_TOKENS
        spans = []
        for start in range(0, n, step):
            spans.append((start, min(start + self.window, n)))
            if start + self.window >= n:
                break
        if len(spans) > MAX_WINDOWS_PER_TEXT:
            # Bounded work for the longest texts (50,000 CJK characters are ~220 windows),
            # still drawn from all of the text rather than cut off after its start.
            last = len(spans) - 1
            picked = sorted(
                {round(i * last / (MAX_WINDOWS_PER_TEXT - 1)) for i in range(MAX_WINDOWS_PER_TEXT)}
            )
            spans = [spans[i] for i in picked]
        return spans

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
        return [
            text[offsets[start][0] : offsets[end - 1][1]]
            for start, end in self._windows(len(offsets))
        ]

    async def embed(
        self, text: str, owner: str = "", *, first_window_only: bool = False
    ) -> list[float]:
        """One unit-length vector for text; long text is the mean of its chunks, or, with
        `first_window_only`, the vector of its first model window."""
        await self.start()
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, deque()).append(
            _Pending(text, future, owner, first_window_only)
        )
        self._changed.set()
        vector = await future
        return vector.tolist()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                # A batch is gathered once its lane has a free worker, so requests that
                # arrive while the lane is busy ride along in its next batch.
                batch, bulk = await self._gather(loop)
                self._lane_busy[bulk] += 1
                task = asyncio.create_task(self._embed_batch(loop, batch, bulk))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()

    def _is_bulk(self, owner: str) -> bool:
        """Whether an owner's next text goes to the bulk lane: the owner has more than one
        text waiting or being embedded, or the text is long."""
        queue = self._waiting[owner]
        return (
            len(queue) > 1
            or self._running.get(owner, 0) > 0
            or len(queue[0].text) >= BULK_TEXT_CHARS
        )

    def _lane_workers(self, bulk: bool) -> int:
        if bulk and time.monotonic() - self._interactive_at < SHARED_SECONDS:
            return max(1, self.workers - 1)
        return self.workers

    def _ready_owners(self, bulk: bool) -> list[str]:
        if self._lane_busy[bulk] >= self._lane_workers(bulk):
            return []
        return [
            owner
            for owner in self._waiting
            if self._running.get(owner, 0) < self.owner_workers and self._is_bulk(owner) == bulk
        ]

    def _ready_lane(self) -> bool | None:
        """The lane with texts ready and a free worker, the interactive one first."""
        for bulk in (False, True):
            if self._ready_owners(bulk):
                return bulk
        return None

    def _ready_count(self, bulk: bool) -> int:
        return sum(len(self._waiting[owner]) for owner in self._ready_owners(bulk))

    async def _wait_for_change(self, seconds: float | None) -> bool:
        self._changed.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def _linger(self, bulk: bool) -> float:
        """How long a batch about to start waits for more texts.

        Waiting for company only pays under load; a lone request is encoded at once, and so
        is the only text ready while the other owners wait for their batches. While another
        batch is being embedded, the cores are busy anyway, and a batch pays a fixed cost
        whatever its size (every weight read from memory once: in float32 here a batch of
        one takes ~21 ms, a batch of eight ~13 ms per text), so it waits up to `busy_wait`
        for the texts on their way. A search's query waits for no one."""
        owners = self._ready_owners(bulk)
        if any(p.first_window_only for owner in owners for p in self._waiting[owner]):
            return 0.0
        if self.busy_wait and self._lane_busy[False] + self._lane_busy[True] > 0:
            return max(self.busy_wait, self.max_wait)
        ready = sum(len(self._waiting[owner]) for owner in owners)
        return self.max_wait if self._last_batch > 1 and ready > 1 else 0.0

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> tuple[list[_Pending], bool]:
        while True:
            while (bulk := self._ready_lane()) is None:
                await self._wait_for_change(None)
            linger = self._linger(bulk)
            deadline = loop.time() + linger
            while self._ready_count(bulk) < self.batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await self._wait_for_change(remaining):
                    break
            # Texts that arrived meanwhile may have moved an owner to the other lane.
            batch = self._take(bulk)
            if batch:
                self._last_batch = len(batch)
                if not bulk:
                    self._interactive_at = time.monotonic()
                return batch, bulk

    def _take(self, bulk: bool) -> list[_Pending]:
        """Up to batch_size texts of the lane's ready owners, one per owner in turn."""
        batch: list[_Pending] = []
        owners = self._ready_owners(bulk)
        taken: set[str] = set()
        while owners and len(batch) < self.batch_size:
            for owner in list(owners):
                queue = self._waiting[owner]
                item = queue.popleft()
                if not item.future.cancelled():
                    batch.append(item)
                    taken.add(owner)
                # Served owners go to the back of the line for the next batch.
                del self._waiting[owner]
                if queue:
                    self._waiting[owner] = queue
                else:
                    owners.remove(owner)
                if len(batch) >= self.batch_size:
                    break
        for owner in taken:
            self._running[owner] = self._running.get(owner, 0) + 1
        return batch

    def _finished(self, batch: list[_Pending], bulk: bool) -> None:
        self._lane_busy[bulk] -= 1
        for owner in {item.owner for item in batch}:
            left = self._running.get(owner, 0) - 1
            if left > 0:
                self._running[owner] = left
            else:
                self._running.pop(owner, None)
        self._changed.set()

    async def _embed_batch(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Pending],
        bulk: bool,
    ) -> None:
        texts = [p.text for p in batch]
        whole = [not p.first_window_only for p in batch]
        pool = self._bulk_pool if bulk else self._pool
        try:
            vectors = await loop.run_in_executor(pool, self._encode, texts, whole)
        except Exception as exc:
            log.exception("embedding a batch of %d texts failed", len(texts))
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            self._finished(batch, bulk)
        for p, vector in zip(batch, vectors, strict=True):
            if not p.future.done():
                p.future.set_result(vector)

    def _encode(self, texts: list[str], whole: list[bool] | None = None) -> list[np.ndarray]:
        """One vector per text, on the embedding thread; texts not `whole` are embedded from
        their first window only."""
        started = time.perf_counter()
        whole = whole or [True] * len(texts)
        if self._packed is not None:
            vectors, counts = self._encode_packed(texts, whole)
        else:
            with precision_scope(self.precision):
                vectors, counts = self._encode_padded(texts, whole)
        metrics.EMBED_BATCH_SIZE.observe(len(texts))
        metrics.EMBED_SECONDS.observe(time.perf_counter() - started)
        combined: list[np.ndarray] = []
        at = 0
        for n in counts:
            combined.append(_combine(vectors[at : at + n]))
            at += n
        return combined

    def _encode_packed(self, texts: list[str], whole: list[bool]) -> tuple[np.ndarray, list[int]]:
        assert self._packed is not None
        tokenizer = self._chunk_tokenizer
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        sequences: list[list[int]] = []
        counts: list[int] = []
        for ids, all_of_it in zip(self._token_ids(texts), whole, strict=True):
            spans = self._windows(len(ids)) if all_of_it else [(0, min(len(ids), self.window))]
            sequences.extend([cls, *ids[start:end], sep] for start, end in spans)
            counts.append(len(spans))
        return self._packed.encode(sequences), counts

    def _encode_padded(self, texts: list[str], whole: list[bool]) -> tuple[np.ndarray, list[int]]:
        pieces = [
            self.chunk(t) if all_of_it else self.chunk(t)[:1]
            for t, all_of_it in zip(texts, whole, strict=True)
        ]
        # encode() sorts by length before splitting into model batches, so small model
        # batches keep texts of similar length together and little compute goes to padding.
        with self._encode_lock:
            vectors: Any = self.model.encode(
                [c for p in pieces for c in p],
                batch_size=self.encode_batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32), [len(p) for p in pieces]


def _combine(chunk_vectors: np.ndarray) -> np.ndarray:
    if len(chunk_vectors) == 1:
        return chunk_vectors[0]
    mean = chunk_vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else mean
