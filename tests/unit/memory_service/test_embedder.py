"""The embedder with the real bundled model: batching, chunking, and agreement with encode()."""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
import threading
import time

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling

from memory_service.config import MemorySettings
from memory_service.embedder import CHUNK_OVERLAP_TOKENS, MAX_WINDOWS_PER_TEXT, Embedder
from memory_service.model_loading import (
    embed_parallelism,
    load_sentence_transformer,
    native_bfloat16,
    resolve_precision,
)
from memory_service.packed import PackedBertEncoder, attention_groups


async def test_concurrent_requests_share_model_calls(sentence_model) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    embedder = Embedder(model, name, batch_size=32, max_wait_ms=5)
    sizes: list[int] = []
    encode = embedder._encode

    def recording(texts: list[str], whole: list[bool] | None = None) -> np.ndarray:
        sizes.append(len(texts))
        return encode(texts, whole)

    embedder._encode = recording  # type: ignore[method-assign]
    texts = [f"note number {i} about topic {i % 7}" for i in range(64)]
    vectors = await asyncio.gather(*(embedder.embed(t) for t in texts))
    await embedder.stop()

    assert sum(sizes) == 64
    assert len(sizes) < 16
    assert max(sizes) <= 32
    direct = model.encode(texts, normalize_embeddings=True)
    assert np.allclose(np.array(vectors), direct, atol=1e-4)


async def test_long_text_is_chunked_with_overlap_not_truncated(embedder) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(f"word{i}" for i in range(900))
    chunks = embedder.chunk(text)
    assert len(chunks) > 1
    assert chunks[0].startswith("word0 ") and chunks[-1].endswith("word899")
    tokenizer = embedder.model.tokenizer
    for chunk in chunks:
        assert len(tokenizer(chunk, add_special_tokens=False)["input_ids"]) <= embedder.window
    # Consecutive chunks overlap, so no word falls between two chunks.
    first_tail = chunks[0].split()[-1]
    assert first_tail in chunks[1]
    assert CHUNK_OVERLAP_TOKENS > 0

    vector = np.array(await embedder.embed(text))
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
    assert embedder.chunk("short text") == ["short text"]


MIXED_TEXTS = [
    "hi",
    "How do I rotate a JWT signing key without logging every user out?",
    "ERR_7731 again when the worker restarts; the queue keeps the message but the ack is lost "
    "and the consumer sees it twice, which breaks the idempotency check in the billing job.",
    "  leading and trailing spaces  ",
    "Ünïcödé, emoji 🙂 and CJK 漢字 in one prompt",
    " ".join(f"token{i}" for i in range(700)),
]


async def test_packed_encoder_matches_sentence_transformers(sentence_model) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    packed = Embedder(model, name, max_wait_ms=0)
    padded = Embedder(model, name, max_wait_ms=0, packed=False)
    assert packed.mode == "packed float32" and padded.mode == "padded float32"
    short = MIXED_TEXTS[:-1]
    ours = np.array(await asyncio.gather(*(packed.embed(t) for t in short)))
    reference = model.encode(short, normalize_embeddings=True)
    assert np.abs(ours - reference).max() < 1e-5
    # Over the window, both average the same chunks when every word is one token...
    words = "the cat sat on a mat and looked at the dog while it rained outside " * 60
    assert len(packed.chunk(words)) > 2
    same = np.array([await e.embed(words) for e in (packed, padded)])
    assert np.abs(same[0] - same[1]).max() < 1e-5
    # ...and nearly the same where a chunk edge cuts a word into pieces.
    cut = np.array([await e.embed(MIXED_TEXTS[-1]) for e in (packed, padded)])
    assert float(cut[0] @ cut[1]) > 0.995
    await packed.stop()
    await padded.stop()


async def test_packed_encoder_keeps_a_truncated_dimension() -> None:
    model, name = load_sentence_transformer(None, truncate_dim=128)
    embedder = Embedder(model, name, max_wait_ms=0)
    assert embedder.mode.startswith("packed") and embedder.dimension == 128
    vectors = np.array(await asyncio.gather(*(embedder.embed(t) for t in MIXED_TEXTS[:3])))
    await embedder.stop()
    reference = model.encode(MIXED_TEXTS[:3], normalize_embeddings=True)
    assert vectors.shape == (3, 128)
    assert np.abs(vectors - reference).max() < 1e-5


def test_the_packed_forward_pass_runs_its_tensor_operations_outside_python(
    sentence_model,
) -> None:  # type: ignore[no-untyped-def]
    # Each tensor operation called from Python takes the GIL back when it returns; inside
    # the graph none does. What Python calls during a pass is counted here: building the
    # two input tensors and reading the result, not the ~100 operations of six layers.
    model, _ = sentence_model
    encoder = PackedBertEncoder(model)
    texts = ["hi", "hello there my friend", "one two three four five six seven eight nine"]
    sequences = [model.tokenizer(t)["input_ids"] for t in texts]
    encoder.encode(sequences)
    called: list[str] = []

    def profile(frame, event, arg) -> None:  # type: ignore[no-untyped-def]
        if event == "c_call":
            called.append(getattr(arg, "__qualname__", ""))

    sys.setprofile(profile)
    try:
        vectors = encoder.encode(sequences)
    finally:
        sys.setprofile(None)
    tensor_ops = [
        name for name in called if name.startswith(("Tensor.", "_VariableFunctionsClass."))
    ]
    assert tensor_ops == ["_VariableFunctionsClass.tensor"] * 2 + ["Tensor.numpy"]
    reference = model.encode(texts, normalize_embeddings=True)
    assert np.abs(vectors - reference).max() < 1e-5


def test_models_other_than_mean_pooled_bert_take_the_padded_path(sentence_model) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    assert PackedBertEncoder.supports(model)
    transformer, _, normalize = list(model.children())
    cls_pooled = SentenceTransformer(
        modules=[transformer, Pooling(model.get_embedding_dimension(), "cls"), normalize]
    )
    assert not PackedBertEncoder.supports(cls_pooled)
    assert Embedder(cls_pooled, name).mode == "padded float32"


async def test_bfloat16_vectors_stay_close_to_float32(sentence_model) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    results = []
    for precision in ("float32", "bfloat16"):
        embedder = Embedder(model, name, max_wait_ms=0, precision=precision)  # type: ignore[arg-type]
        results.append(np.array(await asyncio.gather(*(embedder.embed(t) for t in MIXED_TEXTS))))
        await embedder.stop()
    cosines = (results[0] * results[1]).sum(axis=1)
    assert cosines.min() > 0.999
    assert not np.array_equal(results[0], results[1])


def test_precision_setting() -> None:
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"
    assert resolve_precision("auto") == ("bfloat16" if native_bfloat16() else "float32")
    with pytest.raises(ValueError, match="float16"):
        resolve_precision("float16")


async def test_parallel_workers_give_the_same_vectors(sentence_model) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    threads = torch.get_num_threads()
    embedder = Embedder(model, name, batch_size=8, max_wait_ms=2, workers=2, model_threads=1)
    assert embedder.mode == "packed float32, 2 workers"
    texts = [f"note {i}: " + "about the garden " * (i % 9) for i in range(48)]
    try:
        vectors = np.array(await asyncio.gather(*(embedder.embed(t) for t in texts)))
    finally:
        await embedder.stop()
        torch.set_num_threads(threads)
    assert np.abs(vectors - model.encode(texts, normalize_embeddings=True)).max() < 1e-5


def test_workers_share_the_model_threads() -> None:
    def plan(threads: int, workers: int) -> dict[str, int]:
        return embed_parallelism(MemorySettings(torch_threads=threads, embed_workers=workers))

    assert plan(4, 0) == {"workers": 4, "model_threads": 1}
    assert plan(4, 2) == {"workers": 2, "model_threads": 2}
    assert plan(2, 8) == {"workers": 2, "model_threads": 1}
    assert plan(1, 0) == {"workers": 1, "model_threads": 1}


async def test_one_owners_backlog_does_not_hold_back_another_owners_text(sentence_model) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    embedder = Embedder(model, name, batch_size=8, max_wait_ms=1, workers=2, model_threads=1)
    finished: list[str] = []

    async def embed(owner: str, text: str) -> None:
        await embedder.embed(text, owner)
        finished.append(owner)

    try:
        flood = [
            asyncio.create_task(embed("flooding", f"long note {i} " + "words " * 200))
            for i in range(40)
        ]
        await asyncio.sleep(0)
        await embed("quiet", "where did I park")
        await asyncio.gather(*flood)
    finally:
        await embedder.stop()
    # The flood runs in the bulk lane; the quiet text goes to the interactive lane at once,
    # so it is done before the flood's first two batches of 8.
    assert finished.index("quiet") < 16
    assert finished.count("flooding") == 40


async def test_one_owners_backlog_runs_on_every_worker(sentence_model, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    embedder = Embedder(model, name, batch_size=4, max_wait_ms=1, workers=2, model_threads=1)
    encode = embedder._encode
    lock = threading.Lock()
    active, peak = 0, 0

    def counted(texts: list[str], whole: list[bool] | None = None) -> list[np.ndarray]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            time.sleep(0.05)
            return encode(texts, whole)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(embedder, "_encode", counted)
    try:
        await asyncio.gather(*(embedder.embed(f"imported note {i}", "importer") for i in range(24)))
    finally:
        await embedder.stop()
    # Nobody else is waiting: the one owner's import has both workers.
    assert peak == 2


def slowed_and_recorded(embedder: Embedder, seconds: float) -> list[tuple[float, list[str]]]:
    """Make each model call take at least `seconds`; returns where each call's start time
    and texts are recorded."""
    calls: list[tuple[float, list[str]]] = []
    encode = embedder._encode

    def slowed(texts: list[str], whole: list[bool] | None = None) -> list[np.ndarray]:
        calls.append((time.monotonic(), list(texts)))
        time.sleep(seconds)
        return encode(texts, whole)

    embedder._encode = slowed  # type: ignore[method-assign]
    return calls


async def test_while_a_batch_runs_the_next_one_waits_for_the_texts_on_their_way(
    sentence_model,
) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    embedder = Embedder(model, name, max_wait_ms=1, busy_wait_ms=400, workers=2, model_threads=1)
    calls = slowed_and_recorded(embedder, 0.6)

    async def trickle() -> None:
        # Saves of six users arriving one by one while the first batch runs.
        await asyncio.sleep(0.05)
        for n in range(6):
            await asyncio.sleep(0.01)
            pending.append(asyncio.create_task(embedder.embed(f"note {n}", f"user-{n}")))

    pending: list[asyncio.Task[list[float]]] = []
    try:
        await asyncio.gather(embedder.embed("first note", "alice"), trickle())
        await asyncio.gather(*pending)
    finally:
        await embedder.stop()
    # Alone, the first text went at once; the second worker, free all along, waited for
    # the six rather than starting on the first of them alone.
    assert [len(texts) for _, texts in calls] == [1, 6]


async def test_a_query_waits_for_no_batch_to_fill(sentence_model) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    embedder = Embedder(model, name, max_wait_ms=1, busy_wait_ms=1_000, workers=2, model_threads=1)
    calls = slowed_and_recorded(embedder, 0.3)
    try:
        save = asyncio.create_task(embedder.embed("first note", "alice"))
        await asyncio.sleep(0.05)
        asked = time.monotonic()
        await embedder.embed("where did I park", "bob", first_window_only=True)
        await save
    finally:
        await embedder.stop()
    assert [texts for _, texts in calls] == [["first note"], ["where did I park"]]
    # Started on the free worker at once, not after the busy wait.
    assert calls[1][0] - asked < 0.5


def test_attention_groups_keep_padding_small() -> None:
    lengths = [3, 3, 4, 9, 10, 11, 40, 41, 60, 256, 256]
    groups = attention_groups(lengths)
    assert [(g.batch, g.longest, g.even) for g in groups] == [
        (6, 11, False),
        (2, 41, False),
        (1, 60, True),
        (2, 256, True),
    ]
    assert [g.tokens for g in groups] == [
        slice(0, 40),
        slice(40, 121),
        slice(121, 181),
        slice(181, 693),
    ]


async def test_a_query_is_embedded_from_its_first_window_only(embedder) -> None:  # type: ignore[no-untyped-def]
    first = " ".join(f"alpha{i}" for i in range(120))
    text = first + " " + " ".join(f"omega{i}" for i in range(900))
    whole = np.array(await embedder.embed(text))
    query = np.array(await embedder.embed(text, first_window_only=True))
    window = np.array(await embedder.embed(embedder.chunk(text)[0]))
    assert np.allclose(query, window, atol=1e-4)
    assert not np.allclose(query, whole, atol=1e-2)


def test_the_longest_texts_are_embedded_from_windows_spread_over_all_of_them(embedder) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(f"w{i}" for i in range(60_000))
    chunks = embedder.chunk(text)
    assert len(chunks) == MAX_WINDOWS_PER_TEXT
    assert chunks[0].startswith("w0 ")
    assert chunks[-1].endswith("w59999")
    # Spread evenly from start to end: the windows start at steadily rising positions.
    starts = [int(re.search(r"\bw(\d+)", chunk).group(1)) for chunk in chunks]  # type: ignore[union-attr]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) <= 2 * min(gaps)
    assert 25_000 < starts[len(starts) // 2] < 35_000
