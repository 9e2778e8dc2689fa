"""The embedder's scheduling: batching, lanes, per-user turns and lingering, driven through the
public `Encoder` protocol by an encoder that stands in for the model, on virtual time."""

from __future__ import annotations

import asyncio
import threading
import zlib
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from memory_service.embedding.scheduler import SHARED_SECONDS, Embedder
from memory_service.ranking import REFERENCE_CALIBRATION

DIMENSION = 8
# Bounds a test that waits for the scheduler to reach a state, should it never get there.
REACHED_WITHIN_SECONDS = 10.0


def vector_of(text: str) -> np.ndarray:
    """A unit vector that depends on the text alone."""
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    vector = rng.standard_normal(DIMENSION).astype(np.float32)
    return vector / np.linalg.norm(vector)


class ScriptedEncoder:
    """An `Encoder` that records each call (texts, flags, thread) in the order calls begin.

    Held, each call waits until the test releases it, so a test decides when a batch ends."""

    model_name = "scripted"
    dimension = DIMENSION
    mode = "scripted"
    calibration = REFERENCE_CALIBRATION

    def __init__(self, *, held: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.flags: list[list[bool]] = []
        self.call_threads: list[int] = []
        self.prepared_threads: set[int] = set()
        self.active = 0
        self.peak = 0
        self._held = held
        self._gates: list[threading.Event] = []
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._progress = asyncio.Event()

    def prepare_thread(self) -> None:
        with self._lock:
            self.prepared_threads.add(threading.get_ident())

    def encode(self, texts: Sequence[str], first_window_only: Sequence[bool]) -> list[np.ndarray]:
        gate = threading.Event()
        with self._lock:
            self.calls.append(list(texts))
            self.flags.append(list(first_window_only))
            self.call_threads.append(threading.get_ident())
            self._gates.append(gate)
            if not self._held:
                gate.set()
            self.active += 1
            self.peak = max(self.peak, self.active)
        self._loop.call_soon_threadsafe(self._progress.set)
        try:
            if not gate.wait(REACHED_WITHIN_SECONDS):
                raise TimeoutError("the test never released this batch")
            return [vector_of(t) for t in texts]
        finally:
            with self._lock:
                self.active -= 1

    def release(self, call: int | None = None) -> None:
        """Let one call (by the order calls began) finish, or, with None, every call now and
        to come."""
        with self._lock:
            if call is None:
                self._held = False
                for gate in self._gates:
                    gate.set()
            else:
                self._gates[call].set()

    async def started(self, calls: int) -> None:
        """Return once `calls` calls have begun."""
        async with asyncio.timeout(REACHED_WITHIN_SECONDS):
            while True:
                self._progress.clear()
                if len(self.calls) >= calls:
                    return
                await self._progress.wait()


class VirtualClock:
    """A `Clock` whose time stands still until the test moves it."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self._timers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if seconds is not None:
            self._timers.append((self.now + seconds, timer))
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            timer.cancel()
            self._timers = [(at, t) for at, t in self._timers if t is not timer]
        return event.is_set()

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for at, timer in self._timers:
            if at <= self.now and not timer.done():
                timer.set_result(None)
        await settle()


async def settle() -> None:
    """Let every task that can run, run: the scheduler works on the loop alone."""
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def stopped() -> AsyncIterator[list[Embedder]]:
    """Embedders a test makes, stopped after it."""
    made: list[Embedder] = []
    yield made
    for embedder in made:
        await embedder.stop()


async def test_concurrent_requests_share_model_calls(
    clock: VirtualClock, stopped: list[Embedder]
) -> None:
    encoder = ScriptedEncoder()
    embedder = Embedder(encoder, batch_size=32, max_wait_ms=5, clock=clock)
    stopped.append(embedder)
    texts = [f"note number {i} about topic {i % 7}" for i in range(64)]
    vectors = await asyncio.gather(*(embedder.embed(t) for t in texts))

    sizes = [len(call) for call in encoder.calls]
    assert sum(sizes) == 64
    assert len(sizes) < 16
    assert max(sizes) <= 32
    # Each caller gets the vector of its own text.
    assert np.allclose(np.array(vectors), np.array([vector_of(t) for t in texts]), atol=1e-6)
    # The encoder ran on threads it had prepared (`prepare_thread`).
    assert set(encoder.call_threads) <= encoder.prepared_threads
    assert encoder.flags == [[False] * size for size in sizes]


async def test_the_embedder_names_the_encoders_model_and_its_workers(
    clock: VirtualClock, stopped: list[Embedder]
) -> None:
    one = Embedder(ScriptedEncoder(), clock=clock)
    two = Embedder(ScriptedEncoder(), workers=2, clock=clock)
    stopped.extend([one, two])
    assert (one.model_name, one.dimension, one.mode) == ("scripted", DIMENSION, "scripted")
    assert two.mode == "scripted, 2 workers"


async def test_one_owners_backlog_does_not_hold_back_another_owners_text(
    clock: VirtualClock, stopped: list[Embedder]
) -> None:
    encoder = ScriptedEncoder(held=True)
    embedder = Embedder(encoder, batch_size=8, max_wait_ms=1, workers=2, clock=clock)
    stopped.append(embedder)
    finished: list[str] = []

    async def embed(owner: str, text: str) -> None:
        await embedder.embed(text, owner)
        finished.append(owner)

    flood = [
        asyncio.create_task(embed("flooding", f"long note {i} " + "words " * 200))
        for i in range(40)
    ]
    # The flood runs in the bulk lane, on both of its workers...
    await encoder.started(2)
    await settle()
    quiet = asyncio.create_task(embed("quiet", "where did I park"))
    # ...and the quiet text goes to the interactive lane at once, so it is done before the
    # flood's first two batches of 8.
    await encoder.started(3)
    assert encoder.calls[2] == ["where did I park"]
    encoder.release(2)
    await quiet
    encoder.release()
    await asyncio.gather(*flood)
    assert finished.index("quiet") < 16
    assert finished.count("flooding") == 40
    assert sorted(len(call) for call in encoder.calls) == [1] + [8] * 5


async def test_one_owners_backlog_runs_on_every_worker(
    clock: VirtualClock, stopped: list[Embedder]
) -> None:
    encoder = ScriptedEncoder(held=True)
    embedder = Embedder(encoder, batch_size=4, max_wait_ms=1, workers=2, clock=clock)
    stopped.append(embedder)
    saves = asyncio.gather(*(embedder.embed(f"imported note {i}", "importer") for i in range(24)))
    await encoder.started(2)
    encoder.release()
    await saves
    # Nobody else is waiting: the one owner's import has both workers.
    assert encoder.peak == 2


async def test_an_owner_holds_at_most_owner_workers_of_a_lane(
    clock: VirtualClock, stopped: list[Embedder]
) -> None:
    encoder = ScriptedEncoder(held=True)
    embedder = Embedder(
        encoder, batch_size=4, max_wait_ms=1, workers=2, owner_workers=1, clock=clock
    )
    stopped.append(embedder)
    saves = asyncio.gather(*(embedder.embed(f"imported note {i}", "importer") for i in range(8)))
    await encoder.started(1)
    await settle()
    await asyncio.to_thread(lambda: None)
    # The second worker stays free for other owners rather than taking the next batch.
    assert len(encoder.calls) == 1
    encoder.release()
    await saves
    assert (len(encoder.calls), encoder.peak) == (2, 1)


async def test_a_backlog_leaves_a_worker_to_others_while_they_keep_coming(
    clock: VirtualClock, stopped: list[Embedder]
) -> None:
    encoder = ScriptedEncoder(held=True)
    embedder = Embedder(encoder, batch_size=4, max_wait_ms=1, workers=2, clock=clock)
    stopped.append(embedder)
    quiet = asyncio.create_task(embedder.embed("where did I park", "bob"))
    await encoder.started(1)
    encoder.release(0)
    await quiet
    saves = asyncio.gather(*(embedder.embed(f"imported note {i}", "importer") for i in range(16)))
    await encoder.started(2)
    await settle()
    await asyncio.to_thread(lambda: None)
    # Within SHARED_SECONDS of an interactive batch, the import holds one worker of two...
    assert (len(encoder.calls), encoder.peak) == (2, 1)
    # ...and once that long has passed without one, both.
    await clock.advance(SHARED_SECONDS)
    encoder.release(1)
    await encoder.started(4)
    assert encoder.active == 2
    encoder.release()
    await saves
    assert encoder.peak == 2


async def test_while_a_batch_runs_the_next_one_waits_for_the_texts_on_their_way(
    clock: VirtualClock, stopped: list[Embedder]
) -> None:
    encoder = ScriptedEncoder(held=True)
    embedder = Embedder(encoder, max_wait_ms=1, busy_wait_ms=400, workers=2, clock=clock)
    stopped.append(embedder)
    first = asyncio.create_task(embedder.embed("first note", "alice"))
    # Alone, the first text goes at once: no time passes before its batch starts.
    await encoder.started(1)
    assert encoder.calls == [["first note"]]
    # Saves of six users arriving one by one while the first batch runs.
    await clock.advance(0.05)
    pending = []
    for n in range(6):
        await clock.advance(0.01)
        pending.append(asyncio.create_task(embedder.embed(f"note {n}", f"user-{n}")))
        await settle()
    # The second worker, free all along, waits up to the busy wait for the texts on their
    # way rather than starting on the first of them alone.
    await clock.advance(0.4)
    await encoder.started(2)
    encoder.release()
    await asyncio.gather(first, *pending)
    assert [len(texts) for texts in encoder.calls] == [1, 6]


async def test_a_query_waits_for_no_batch_to_fill(
    clock: VirtualClock, stopped: list[Embedder]
) -> None:
    encoder = ScriptedEncoder(held=True)
    embedder = Embedder(encoder, max_wait_ms=1, busy_wait_ms=1_000, workers=2, clock=clock)
    stopped.append(embedder)
    save = asyncio.create_task(embedder.embed("first note", "alice"))
    await encoder.started(1)
    asked = clock.monotonic()
    query = asyncio.create_task(embedder.embed("where did I park", "bob", first_window_only=True))
    # Started on the free worker at once, not after the busy wait: no time has passed.
    await encoder.started(2)
    assert clock.monotonic() == asked
    encoder.release()
    await asyncio.gather(save, query)
    assert encoder.calls == [["first note"], ["where did I park"]]
    assert encoder.flags == [[False], [True]]


async def test_a_failed_batch_fails_each_of_its_texts_and_the_next_batch_runs(
    clock: VirtualClock, stopped: list[Embedder]
) -> None:
    class Failing(ScriptedEncoder):
        def encode(
            self, texts: Sequence[str], first_window_only: Sequence[bool]
        ) -> list[np.ndarray]:
            if "poison" in texts:
                super().encode(texts, first_window_only)
                raise RuntimeError("model failed")
            return super().encode(texts, first_window_only)

    embedder = Embedder(Failing(), clock=clock)
    stopped.append(embedder)
    with pytest.raises(RuntimeError, match="model failed"):
        await embedder.embed("poison", "alice")
    assert np.allclose(await embedder.embed("fine", "alice"), vector_of("fine"))
