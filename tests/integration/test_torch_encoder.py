"""The torch encoder with the real bundled model, through the embedder: chunking, the packed
forward pass, precision and workers, and agreement with sentence-transformers' encode()."""

from __future__ import annotations

import asyncio
import itertools
import re
import sys

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling

from memory_service.embedder import Embedder
from memory_service.encoder import CHUNK_OVERLAP_TOKENS, MAX_WINDOWS_PER_TEXT
from memory_service.model_loading import load_sentence_transformer
from memory_service.packed import PackedBertEncoder
from memory_service.torch_encoder import TorchEncoder

pytestmark = pytest.mark.slow


def embedder_of(model: SentenceTransformer, name: str, **kwargs) -> Embedder:  # type: ignore[no-untyped-def]
    """An embedder over the model; encoder settings go to the encoder, the rest to the
    embedder."""
    encoder_keys = ("precision", "packed", "encode_batch_size", "model_threads")
    encoder = TorchEncoder(model, name, **{k: kwargs.pop(k) for k in encoder_keys if k in kwargs})
    return Embedder(encoder, **kwargs)


async def test_concurrent_requests_agree_with_encode(sentence_model) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    embedder = embedder_of(model, name, batch_size=32, max_wait_ms=5)
    texts = [f"note number {i} about topic {i % 7}" for i in range(64)]
    vectors = await asyncio.gather(*(embedder.embed(t) for t in texts))
    await embedder.stop()
    direct = model.encode(texts, normalize_embeddings=True)
    assert np.allclose(np.array(vectors), direct, atol=1e-4)


async def test_long_text_is_chunked_with_overlap_not_truncated(embedder) -> None:  # type: ignore[no-untyped-def]
    encoder = embedder.encoder
    text = " ".join(f"word{i}" for i in range(900))
    chunks = encoder.chunk(text)
    assert len(chunks) > 1
    assert chunks[0].startswith("word0 ") and chunks[-1].endswith("word899")
    tokenizer = encoder.model.tokenizer
    for chunk in chunks:
        assert len(tokenizer(chunk, add_special_tokens=False)["input_ids"]) <= encoder.window
    # Consecutive chunks overlap, so no word falls between two chunks.
    first_tail = chunks[0].split()[-1]
    assert first_tail in chunks[1]
    assert CHUNK_OVERLAP_TOKENS > 0

    vector = np.array(await embedder.embed(text))
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
    assert encoder.chunk("short text") == ["short text"]


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
    packed = embedder_of(model, name, max_wait_ms=0)
    padded = embedder_of(model, name, max_wait_ms=0, packed=False)
    assert packed.mode == "packed float32" and padded.mode == "padded float32"
    short = MIXED_TEXTS[:-1]
    ours = np.array(await asyncio.gather(*(packed.embed(t) for t in short)))
    reference = model.encode(short, normalize_embeddings=True)
    assert np.abs(ours - reference).max() < 1e-5
    # Over the window, both average the same chunks when every word is one token...
    words = "the cat sat on a mat and looked at the dog while it rained outside " * 60
    assert len(packed.encoder.chunk(words)) > 2  # type: ignore[attr-defined]
    same = np.array([await e.embed(words) for e in (packed, padded)])
    assert np.abs(same[0] - same[1]).max() < 1e-5
    # ...and nearly the same where a chunk edge cuts a word into pieces.
    cut = np.array([await e.embed(MIXED_TEXTS[-1]) for e in (packed, padded)])
    assert float(cut[0] @ cut[1]) > 0.995
    await packed.stop()
    await padded.stop()


async def test_packed_encoder_keeps_a_truncated_dimension() -> None:
    model, name = load_sentence_transformer(None, truncate_dim=128)
    embedder = embedder_of(model, name, max_wait_ms=0)
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
    assert TorchEncoder(cls_pooled, name).mode == "padded float32"


async def test_bfloat16_vectors_stay_close_to_float32(sentence_model) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    results = []
    for precision in ("float32", "bfloat16"):
        embedder = embedder_of(model, name, max_wait_ms=0, precision=precision)
        results.append(np.array(await asyncio.gather(*(embedder.embed(t) for t in MIXED_TEXTS))))
        await embedder.stop()
    cosines = (results[0] * results[1]).sum(axis=1)
    assert cosines.min() > 0.999
    assert not np.array_equal(results[0], results[1])


async def test_parallel_workers_give_the_same_vectors(sentence_model) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    threads = torch.get_num_threads()
    embedder = embedder_of(model, name, batch_size=8, max_wait_ms=2, workers=2, model_threads=1)
    assert embedder.mode == "packed float32, 2 workers"
    texts = [f"note {i}: " + "about the garden " * (i % 9) for i in range(48)]
    try:
        vectors = np.array(await asyncio.gather(*(embedder.embed(t) for t in texts)))
    finally:
        await embedder.stop()
        torch.set_num_threads(threads)
    assert np.abs(vectors - model.encode(texts, normalize_embeddings=True)).max() < 1e-5


async def test_a_query_is_embedded_from_its_first_window_only(embedder) -> None:  # type: ignore[no-untyped-def]
    first = " ".join(f"alpha{i}" for i in range(120))
    text = first + " " + " ".join(f"omega{i}" for i in range(900))
    whole = np.array(await embedder.embed(text))
    query = np.array(await embedder.embed(text, first_window_only=True))
    window = np.array(await embedder.embed(embedder.encoder.chunk(text)[0]))
    assert np.allclose(query, window, atol=1e-4)
    assert not np.allclose(query, whole, atol=1e-2)


def test_the_longest_texts_are_embedded_from_windows_spread_over_all_of_them(embedder) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(f"w{i}" for i in range(60_000))
    chunks = embedder.encoder.chunk(text)
    assert len(chunks) == MAX_WINDOWS_PER_TEXT
    assert chunks[0].startswith("w0 ")
    assert chunks[-1].endswith("w59999")
    # Spread evenly from start to end: the windows start at steadily rising positions.
    starts = [int(re.search(r"\bw(\d+)", chunk).group(1)) for chunk in chunks]  # type: ignore[union-attr]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) <= 2 * min(gaps)
    assert 25_000 < starts[len(starts) // 2] < 35_000
