"""The embedder with the real bundled model: batching, chunking, and agreement with encode()."""

from __future__ import annotations

import asyncio

import numpy as np

from memory_service.embedder import CHUNK_OVERLAP_TOKENS, Embedder


async def test_concurrent_requests_share_model_calls(sentence_model) -> None:  # type: ignore[no-untyped-def]
    model, name = sentence_model
    embedder = Embedder(model, name, batch_size=32, max_wait_ms=5)
    sizes: list[int] = []
    encode = embedder._encode

    def recording(texts: list[str]) -> np.ndarray:
        sizes.append(len(texts))
        return encode(texts)

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
