"""Scheduling of text embeddings: concurrent requests coalesced into batches, and users
served in turn so one user's heavy requests queue behind their own, not everyone's. The
model itself sits behind the `Encoder` protocol (encoder.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from memory_service import metrics
from memory_service.embedding.calibration import Calibration
from memory_service.embedding.encoder import Encoder

log = logging.getLogger(__name__)

# Bulk batches (texts of owners with a backlog, or long texts) run on threads at this
# niceness: alone they run as fast as ever, but the kernel gives other users' batches the
# CPU first. An unprivileged thread can lower its priority but never raise it back, so
# bulk work has threads of its own.
BULK_NICENESS = 10
# A text this long costs a full model window or more.
BULK_TEXT_CHARS = 1_000
# Bulk batches may hold every worker only once no interactive batch has started for this
# long; until then they leave one worker's cores to the interactive lane.
SHARED_SECONDS = 2.0


class Clock(Protocol):
    """The time the scheduler lingers and shares lanes by."""

    def monotonic(self) -> float: ...

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        """Wait until `event` is set or `seconds` pass (None: no limit); whether it was set."""
        ...


class SystemClock:
    """The event loop's clock, the one its timeouts run on."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            return False
        return True


def _bulk_thread(encoder: Encoder) -> None:
    encoder.prepare_thread()
    with contextlib.suppress(AttributeError, OSError):
        # On Linux a thread id names one thread, so only this one is reniced.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICENESS)


def _encode(
    encoder: Encoder, texts: Sequence[str], first_window_only: Sequence[bool]
) -> list[np.ndarray]:
    """One batch, on an embedding thread."""
    started = time.perf_counter()
    vectors = encoder.encode(texts, first_window_only)
    metrics.EMBED_BATCH_SIZE.observe(len(texts))
    metrics.EMBED_SECONDS.observe(time.perf_counter() - started)
    return vectors


@dataclass
class _Pending:
    text: str
    future: asyncio.Future[np.ndarray]
    owner: str
    # Queries are embedded from their first window only: bounded work, whatever their size.
    first_window_only: bool


class Embedder:
    """Embeds texts on worker threads with an `Encoder`, batching whatever requests arrive
    together.

    The encoder runs on those threads, so the event loop only queues texts and hands back
    vectors. Texts wait per owner (the user they are embedded for), and batches run in two
    lanes of `workers` threads each. An owner with a backlog (more than one text waiting or
    being embedded, or a long text) is served in the bulk lane, whose threads run at lower
    CPU priority; every other owner's text goes to the interactive lane. So one user's
    import has all the cores while nobody else needs them, and another user's text neither
    waits for a free worker nor for the CPU: while interactive batches keep coming (within
    SHARED_SECONDS of each other), bulk batches leave one worker's cores to them. Within
    a lane a batch takes one text from each waiting owner in turn, and an owner has at
    most `owner_workers` batches running.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        batch_size: int = 32,
        max_wait_ms: float = 2.0,
        busy_wait_ms: float = 0.0,
        workers: int = 1,
        owner_workers: int = 0,
        clock: Clock | None = None,
    ) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.busy_wait = busy_wait_ms / 1000.0
        self.clock: Clock = clock or SystemClock()
        self.model_name: str = encoder.model_name
        self.dimension: int = encoder.dimension
        self.calibration: Calibration = encoder.calibration
        self._last_batch = 0
        # Owners in the order they are next served; a served owner moves to the back.
        self._waiting: dict[str, deque[_Pending]] = {}
        self._running: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        # Each worker runs one batch at a time on threads of the encoder's own (for ONNX Runtime,
        # `model_threads` each). One thread per worker keeps the cores busy without the
        # workers waiting on each other, and holds up better than one many-threaded call
        # when other processes take CPU.
        self.workers = workers
        # 0: all of a lane's workers.
        self.owner_workers = owner_workers or workers
        # Batches running in each lane (True: bulk).
        self._lane_busy = {False: 0, True: 0}
        self._interactive_at = -SHARED_SECONDS
        self._pool = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="embedder",
            initializer=encoder.prepare_thread,
        )
        self._bulk_pool = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="embedder-bulk",
            initializer=_bulk_thread,
            initargs=(encoder,),
        )

    @property
    def mode(self) -> str:
        workers = f", {self.workers} workers" if self.workers > 1 else ""
        return f"{self.encoder.mode}{workers}"

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

    async def embed(
        self, text: str, owner: str = "", *, first_window_only: bool = False
    ) -> list[float]:
        """One unit-length vector for text; long text is embedded from the windows the
        encoder's `LongText` picks (MEMORY_LONG_TEXT) or, with `first_window_only`, from its
        first model window."""
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
                batch, bulk = await self._gather()
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
        if bulk and self.clock.monotonic() - self._interactive_at < SHARED_SECONDS:
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
        return await self.clock.wait(self._changed, seconds)

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

    async def _gather(self) -> tuple[list[_Pending], bool]:
        while True:
            while (bulk := self._ready_lane()) is None:
                await self._wait_for_change(None)
            linger = self._linger(bulk)
            deadline = self.clock.monotonic() + linger
            while self._ready_count(bulk) < self.batch_size:
                remaining = deadline - self.clock.monotonic()
                if remaining <= 0 or not await self._wait_for_change(remaining):
                    break
            # Texts that arrived meanwhile may have moved an owner to the other lane.
            batch = self._take(bulk)
            if batch:
                self._last_batch = len(batch)
                if not bulk:
                    self._interactive_at = self.clock.monotonic()
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
        first_window_only = [p.first_window_only for p in batch]
        pool = self._bulk_pool if bulk else self._pool
        try:
            vectors = await loop.run_in_executor(
                pool, _encode, self.encoder, texts, first_window_only
            )
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
